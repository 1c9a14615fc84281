"""``heldout_loss``: each domain's held-out loss, for strategies that steer by it (Aioli, Skill-It).

Options: ``windows``, the windows per domain (default 8). The windows are evenly spaced through
each domain's val split with no randomness (models/heldout.py, the same construction as the
learning curves): every measurement of a run, and of every run, is on the same tokens. The
measurement is taken when the step's signals are computed, after its backward and before its
optimizer update, so at step t it is the loss of the parameters after step t − 1. Unlike the
learning curves, these forwards steer training: they are counted as ``forward`` passes in the
run's FLOPs (the compute table and the cost plan show them). The strategy receives a float64
array (K,), the mean token loss of each domain's windows.
"""

from __future__ import annotations


import numpy as np

from models.heldout import HeldOutEvaluator, HeldOutSet
from models.signals.base import SignalProvider, StepContext

DEFAULT_WINDOWS = 8


def windows_option(options: dict, name: str) -> int:
    """The ``windows`` option of a signal, a positive integer."""
    windows = options.get("windows", DEFAULT_WINDOWS)
    if isinstance(windows, bool) or not isinstance(windows, int) or windows < 1:
        raise ValueError(f"signal {name!r}: option windows must be a positive integer, got {windows!r}")
    return windows


class HeldOutLoss(SignalProvider):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        h, s = self.handles, self.handles.settings
        store = h.sources.token_store("val", h.domains)
        heldout = HeldOutSet(store, seq_len=s.seq_len, windows_per_domain=windows_option(self.options, self.name))
        self.evaluator = HeldOutEvaluator(heldout, passes=h.passes, micro_batch_size=s.micro_batch_size,
                                          rank=s.rank, world_size=s.world_size, kind="forward")

    def compute(self, step: StepContext) -> np.ndarray:
        return self.evaluator.domain_loss(self.handles.model)
