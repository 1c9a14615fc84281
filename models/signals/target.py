"""``target_gradient``: the gradient of a held-out target batch, kept on the device.

Options: ``split`` and ``weights`` (where the target batch comes from: e.g. the val split of
every training domain, or one out-of-domain domain), ``batch_fraction`` (its size as a
fraction of the local training batch, rounded up, and at least one sequence for each domain
of the target mixture), ``clip_norm`` (clipped like every domain gradient, as
the original DoGE code clips it; None for no clipping). The batch is drawn stratified from its
own sampler stream and processed in micro-batches like the training batch. Its gradient, the
mean token loss over every rank, stays on the device in ``step.shared`` for providers that
use it (``domain_gradients`` puts it in its inner products); the strategy receives its norm
before clipping.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from models.flat_params import FlatParams
from models.signals.base import SignalProvider, StepContext

TARGET_STREAM = 1000  # + rank: the target batches never shift the training batches


class TargetGradient(SignalProvider):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        h, s = self.handles, self.handles.settings
        self.sampler = h.sources.sampler(self.options["split"], h.domains, s.seq_len, TARGET_STREAM + s.rank)
        self.weights = np.asarray(self.options["weights"], dtype=np.float64)
        local_batch = s.batch_size // s.world_size
        self.size = max(math.ceil(self.options.get("batch_fraction", 1.0) * local_batch), int((self.weights > 0).sum()))
        self.flat = FlatParams(h.raw_model)

    def compute(self, step: StepContext) -> dict[str, Any]:
        passes, s = self.handles.passes, self.handles.settings
        tokens, _ = self.sampler.sample_stratified(self.weights, self.size)
        tokens = torch.from_numpy(tokens).to(s.device)
        grad = self.flat.buffer(0)
        for n, chunk in enumerate(tokens.split(s.micro_batch_size)):
            token_loss = passes.token_loss(self.handles.model, chunk)
            self.flat.write_grad(grad, token_loss.sum() / tokens[:, 1:].numel(), accumulate=n > 0)
            passes.count("backward", token_loss.numel())
        passes.all_reduce(grad)
        grad /= passes.world_size  # the mean over ranks of each rank's mean: equal local batches
        norm = float(grad.norm())
        clip = self.options.get("clip_norm")
        if clip is not None and norm > clip:
            grad *= clip / (norm + 1e-6)
        step.shared[self.name] = grad
        return {"norm": norm}

    def state_dict(self) -> dict[str, Any]:
        return {"sampler": self.sampler.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.sampler.load_state_dict(state["sampler"])
