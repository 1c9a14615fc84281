"""Draw fixed-length training sequences per domain according to mixture weights.

Each sequence's domain is drawn i.i.d. from the weights (or stratified: see
``stratified_domains``), then a uniformly random window of ``seq_len + 1`` tokens (inputs plus
next-token targets) from that domain's flat token array. Windows may cross document
boundaries; EOS separates documents, as in GPT-2 pre-training.

Training batches come from ``step_batch``: the rows of global step t are drawn from a generator
keyed by (seed, stream, t) alone, so they are a function of (seed, t, weights) and nothing else.
Every rank draws the whole global batch's domains and window offsets (a few numbers per row) and
reads the token windows of its own rows only, split by position: 1 process and N processes with
the same global batch train on the same sequences, and a resumed run needs no sampler state.
Other consumers (probes, evaluation) draw from a continuous stream (``sample``), whose generator
state is saved in checkpoints.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from corpus.tokens import TokenStore
from mixbench.errors import DataError


@dataclass
class StepRows:
    """This rank's rows of one global step, and the domains of every row of the step."""

    tokens: np.ndarray  # (local rows, seq_len + 1), int64
    domains: np.ndarray  # (local rows,): domain index of each local row
    global_domains: np.ndarray  # (global rows,): every rank's rows, in position order


def rank_rows(n: int, rank: int, world_size: int) -> slice:
    """Rank ``rank``'s positions among ``n`` rows: contiguous, sizes differing by at most one."""
    return slice(rank * n // world_size, (rank + 1) * n // world_size)


class DomainSampler:
    def __init__(self, store: TokenStore, seq_len: int, seed: int, stream: int = 0):
        self.arrays = store.arrays
        self.domains = store.domains
        self.seq_len = seq_len
        self.seed, self.stream = seed, stream
        # Number of valid window starts per domain.
        self.starts = np.array([a.size - seq_len for a in self.arrays], dtype=np.int64)
        short = [d for d, s in zip(self.domains, self.starts) if s <= 0]
        if short:
            raise DataError(f"domains {short} have fewer than seq_len + 1 = {seq_len + 1} tokens")
        # Independent streams per (seed, stream): stream separates the consumers of one split.
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))

    # -- training batches: keyed by step ----------------------------------------------------
    def step_generator(self, step: int) -> np.random.Generator:
        """The generator of global step ``step`` (1-based): independent of every other step."""
        return np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, self.stream, step])))

    def step_batch(self, weights: np.ndarray, n: int, step: int, *, stratified: bool = False,
                   rank: int = 0, world_size: int = 1) -> StepRows:
        """The ``n`` rows of global step ``step``; this rank reads the windows of its positions
        (``rank_rows``). The draw is the same on every rank and for any number of ranks."""
        rng = self.step_generator(step)
        domains = (self.stratified_domains(weights, n, rng) if stratified
                   else rng.choice(len(self.domains), size=n, p=weights))
        offsets = rng.integers(0, self.starts[domains])
        mine = rank_rows(n, rank, world_size)
        return StepRows(self._read(domains[mine], offsets[mine]), domains[mine], domains)

    # -- continuous streams (probes, evaluation) --------------------------------------------
    def sample_domains(self, weights: np.ndarray, n: int) -> np.ndarray:
        return self.rng.choice(len(self.domains), size=n, p=weights)

    def sample(self, weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (tokens of shape (n, seq_len + 1) as int64, domain index per row)."""
        domains = self.sample_domains(weights, n)
        return self.windows(domains), domains

    def stratified_domains(self, weights: np.ndarray, n: int, rng: np.random.Generator | None = None) -> np.ndarray:
        """Domains of n rows with the expected counts n·w_i as nearly as possible: each domain
        gets ⌊n·w_i⌋ rows and one more with probability equal to the fractional part of n·w_i
        (systematic sampling over a random order of the domains: one uniform offset, points one
        apart, so the r rows left over go to r distinct domains with exactly those marginals),
        and the rows are shuffled. The same expected counts as i.i.d. draws, less variance, and
        no domain of weight ≥ 1/n is ever absent. For uniform weights: an equal share each, the
        remainder to random domains."""
        rng = self.rng if rng is None else rng
        expected = n * np.asarray(weights, dtype=np.float64)
        counts = np.floor(expected + 1e-9).astype(np.int64)
        remainder = n - int(counts.sum())
        if remainder > 0:
            order = rng.permutation(len(counts))
            cumulative = np.cumsum(np.clip(expected - counts, 0.0, None)[order])
            cumulative *= remainder / cumulative[-1]  # exactly r at the end, whatever the rounding
            points = rng.random() + np.arange(remainder)
            counts[order[np.searchsorted(cumulative, points, side="right")]] += 1
        return rng.permutation(np.repeat(np.arange(len(counts)), counts))

    def sample_stratified(self, weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Like ``sample``, with the domains of ``stratified_domains``."""
        domains = self.stratified_domains(weights, n)
        return self.windows(domains), domains

    def windows(self, domains: np.ndarray) -> np.ndarray:
        """One random window per row of ``domains``, from the continuous stream."""
        return self._read(domains, self.rng.integers(0, self.starts[domains]))

    def _read(self, domains: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        out = np.empty((len(domains), self.seq_len + 1), dtype=np.int64)
        for row, (d, o) in enumerate(zip(domains, offsets)):
            out[row] = self.arrays[d][o : o + self.seq_len + 1]
        return out

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
