"""Held-out loss during training: the learning curves of every run.

Every ``training.eval_every`` steps (and after the last step) the loop measures the mean
next-token loss of each domain on a fixed set of windows of its val split. The windows are
evenly spaced through the split, with no randomness, so every strategy, seed and stage is
measured on exactly the same tokens and the curves compare across runs. The measurement uses
no random numbers and changes no state of the run: a run's training is the same whatever
``eval_every`` is (tests/test_heldout.py). It uses the training's loss path (models/token_loss.py)
and brings its sums to the host in one transfer. Its forward passes are not counted in the run's
FLOPs (they measure the run; they do not train it); their time is ``heldout_seconds`` in
run.json.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mixbench.errors import ConfigError
from models.step import StepPasses, to_device, to_host


def eval_steps(steps: int, eval_every: int | None) -> int:
    """The interval between measurements: ``eval_every``, or about 10 points per run for None."""
    return eval_every if eval_every is not None else max(1, round(steps / 10))


def heldout_set(data_dir, domains: list[str], training: dict) -> "HeldOutSet | None":
    """The run's held-out windows from the config's ``training`` section (None: turned off)."""
    from corpus.tokens import TokenStore

    if training["heldout_windows"] == 0:
        return None
    store = TokenStore(Path(data_dir) / "tokens", "val", domains)
    return HeldOutSet(store, seq_len=training["seq_len"], windows_per_domain=training["heldout_windows"])


def window_starts(num_tokens: int, window: int, count: int) -> np.ndarray:
    """``count`` starts of windows of ``window`` tokens spread evenly over ``num_tokens`` (the
    first at 0, the last ending at the split's end)."""
    return np.linspace(0, num_tokens - window, count).round().astype(np.int64)


class HeldOutSet:
    """The fixed val windows of every domain, (domains × windows, seq_len + 1) tokens."""

    def __init__(self, store, *, seq_len: int, windows_per_domain: int, split: str = "val"):
        window = seq_len + 1
        short = {d: int(a.size) for d, a in zip(store.domains, store.arrays) if a.size < window}
        if short:
            fix = ("raise corpus.val_fraction or lower training.seq_len, or turn the held-out curves off with "
                   "training.heldout_windows: 0") if split == "val" else "lower training.seq_len"
            raise ConfigError(f"the {split} split of {', '.join(f'{d} ({n} tokens)' for d, n in short.items())} is "
                              f"shorter than one window of training.seq_len + 1 = {window} tokens: {fix}")
        rows, domain_ids = [], []
        for j, (domain, array) in enumerate(zip(store.domains, store.arrays)):
            overlap = array.size < window * windows_per_domain
            if overlap:
                print(f"note: domain {domain}'s {split} split has {array.size} tokens, fewer than "
                      f"{windows_per_domain} windows of {window}: its held-out windows overlap", file=sys.stderr)
            for start in window_starts(int(array.size), window, windows_per_domain):
                rows.append(np.asarray(array[start:start + window], dtype=np.int64))
                domain_ids.append(j)
        self.domains = list(store.domains)
        self.tokens = np.stack(rows)
        self.domain_ids = np.asarray(domain_ids)


class HeldOutEvaluator:
    """Measures a model on a HeldOutSet; under DDP each rank takes every world_size-th row."""

    def __init__(self, heldout: HeldOutSet, *, passes: StepPasses, micro_batch_size: int, rank: int,
                 world_size: int, kind: str | None = None):
        self.num_domains = len(heldout.domains)
        mine = np.arange(len(heldout.tokens)) % world_size == rank
        self.tokens = to_device(heldout.tokens[mine], passes.device)
        self.domain_ids = torch.as_tensor(heldout.domain_ids[mine], device=passes.device)
        self.passes, self.micro, self.world_size = passes, micro_batch_size, world_size
        self.kind = kind  # the pass kind its forwards count as; None: a measurement, not counted

    def domain_loss(self, model) -> np.ndarray:
        """Mean loss per token of each domain's windows, shape (K,)."""
        def loss_sums(rows: torch.Tensor) -> torch.Tensor:
            return self.passes.token_loss(model, rows, kind=self.kind).sum(dim=1, keepdim=True)

        return self.domain_means(model, loss_sums, width=1)[:, 0]

    @torch.no_grad()
    def domain_means(self, model, row_sums, width: int) -> np.ndarray:
        """Per domain, the mean over its windows' predicted tokens of what ``row_sums`` measures:
        given a micro-batch of windows (rows, seq_len + 1), their sums over tokens, (rows, width).
        The model runs in eval mode (dropout off: no random numbers drawn); under DDP the sums of
        every rank are added in one all-reduce. Returns (K, width)."""
        was_training = model.training
        model.eval()
        sums = torch.zeros(self.num_domains, width + 1, dtype=torch.float64, device=self.passes.device)
        predicted = self.tokens.shape[1] - 1  # tokens a window predicts
        for start in range(0, len(self.tokens), self.micro):
            ids = self.domain_ids[start:start + self.micro]
            sums[:, :width].index_add_(0, ids, row_sums(self.tokens[start:start + self.micro]).double())
            sums[:, width].index_add_(0, ids, torch.full_like(ids, predicted, dtype=torch.float64))
        model.train(was_training)
        if self.world_size > 1:
            dist.all_reduce(sums)
        return to_host(sums[:, :width] / sums[:, width:])
