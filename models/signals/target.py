"""``target_gradient``: the gradient of a held-out target batch, kept on the device.

Options: ``split`` and ``weights`` (where the target batch comes from: e.g. the val split of
every training domain, or one out-of-domain domain), ``batch_fraction`` (its size as a
fraction of the global training batch, rounded up, and at least one sequence for each domain
of the target mixture), ``clip_norm`` (clipped like every domain gradient, as
the original DoGE code clips it; None for no clipping). The batch of step t is drawn stratified
from its own stream keyed by (seed, t), split across ranks by position like the training batch
(so it is the same for any number of ranks), and processed in micro-batches. Its gradient, that
of the mean token loss over the whole batch, stays on the device in ``step.shared`` for providers that
use it (``domain_gradients`` puts it in its inner products); the strategy receives its norm
before clipping.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from models.flat_params import FlatParams, clip_in_place
from models.signals.base import SignalProvider, StepContext
from models.step import to_device

TARGET_STREAM = 1000  # its own stream: the target batches never shift the training batches


class TargetGradient(SignalProvider):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        h, s = self.handles, self.handles.settings
        self.sampler = h.sources.sampler(self.options["split"], h.domains, s.seq_len, TARGET_STREAM)
        self.weights = np.asarray(self.options["weights"], dtype=np.float64)
        self.size = max(math.ceil(self.options.get("batch_fraction", 1.0) * s.batch_size), int((self.weights > 0).sum()))
        self.flat = FlatParams(h.raw_model)

    @classmethod
    def parameter_copies(cls, num_domains: int) -> float:
        return 1.0  # the target gradient

    def compute(self, step: StepContext) -> dict[str, Any]:
        passes, s = self.handles.passes, self.handles.settings
        rows = self.sampler.step_batch(self.weights, self.size, step.step, stratified=True,
                                       rank=s.rank, world_size=s.world_size)
        tokens = to_device(rows.tokens, s.device)
        total_tokens = self.size * s.seq_len  # of the whole batch, on every rank
        grad = self.flat.buffer(0)
        if len(tokens) == 0:  # fewer target rows than ranks: this rank adds nothing
            grad.zero_()
        for n, chunk in enumerate(tokens.split(s.micro_batch_size) if len(tokens) else ()):
            token_loss = passes.token_loss(self.handles.model, chunk)
            self.flat.write_grad(grad, token_loss.sum() / total_tokens, accumulate=n > 0)
            passes.count("backward", token_loss.numel())
        passes.all_reduce(grad)  # Σ over ranks of their share of the mean
        norm = clip_in_place(grad, self.options.get("clip_norm"))
        step.shared[self.name] = grad
        return {"norm": norm}  # a device scalar: the loop brings it over with the step's other stats

    def state_dict(self) -> dict[str, Any]:
        return {}  # the batches are keyed by step: nothing to carry over

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
