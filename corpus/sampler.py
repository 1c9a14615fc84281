"""Draw fixed-length training sequences per domain according to mixture weights.

Each sequence's domain is drawn i.i.d. from the weights, then a uniformly random window of
``seq_len + 1`` tokens (inputs plus next-token targets) from that domain's flat token array.
Windows may cross document boundaries; EOS separates documents, as in GPT-2 pre-training.
The generator state is saved in checkpoints, so a resumed run draws the same batches.
"""

from __future__ import annotations

import numpy as np

from corpus.tokens import TokenStore
from mixbench.errors import DataError


class DomainSampler:
    def __init__(self, store: TokenStore, seq_len: int, seed: int, stream: int = 0):
        self.arrays = store.arrays
        self.domains = store.domains
        self.seq_len = seq_len
        # Number of valid window starts per domain.
        self.starts = np.array([a.size - seq_len for a in self.arrays], dtype=np.int64)
        short = [d for d, s in zip(self.domains, self.starts) if s <= 0]
        if short:
            raise DataError(f"domains {short} have fewer than seq_len + 1 = {seq_len + 1} tokens")
        # Independent streams per (seed, stream): stream separates ranks and other consumers.
        self.rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, stream])))

    def sample_domains(self, weights: np.ndarray, n: int) -> np.ndarray:
        return self.rng.choice(len(self.domains), size=n, p=weights)

    def sample(self, weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Return (tokens of shape (n, seq_len + 1) as int64, domain index per row)."""
        domains = self.sample_domains(weights, n)
        return self.windows(domains), domains

    def stratified_domains(self, weights: np.ndarray, n: int) -> np.ndarray:
        """Domains of n rows with the expected counts n·w_i as nearly as possible: each domain
        gets ⌊n·w_i⌋ rows and one more with probability equal to the fractional part of n·w_i
        (systematic sampling over a random order of the domains: one uniform offset, points one
        apart, so the r rows left over go to r distinct domains with exactly those marginals),
        and the rows are shuffled. The same expected counts as i.i.d. draws, less variance, and
        no domain of weight ≥ 1/n is ever absent. For uniform weights: an equal share each, the
        remainder to random domains."""
        expected = n * np.asarray(weights, dtype=np.float64)
        counts = np.floor(expected + 1e-9).astype(np.int64)
        remainder = n - int(counts.sum())
        if remainder > 0:
            order = self.rng.permutation(len(counts))
            cumulative = np.cumsum(np.clip(expected - counts, 0.0, None)[order])
            cumulative *= remainder / cumulative[-1]  # exactly r at the end, whatever the rounding
            points = self.rng.random() + np.arange(remainder)
            counts[order[np.searchsorted(cumulative, points, side="right")]] += 1
        return self.rng.permutation(np.repeat(np.arange(len(counts)), counts))

    def sample_stratified(self, weights: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Like ``sample``, with the domains of ``stratified_domains``."""
        domains = self.stratified_domains(weights, n)
        return self.windows(domains), domains

    def windows(self, domains: np.ndarray) -> np.ndarray:
        offsets = self.rng.integers(0, self.starts[domains])
        out = np.empty((len(domains), self.seq_len + 1), dtype=np.int64)
        for row, (d, o) in enumerate(zip(domains, offsets)):
            out[row] = self.arrays[d][o : o + self.seq_len + 1]
        return out

    def state_dict(self) -> dict:
        return {"bit_generator": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
