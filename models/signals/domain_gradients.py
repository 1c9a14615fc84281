"""``domain_gradients``: one gradient per domain, kept on the device; the model steps on Σ w_i g_i.

Options: ``clip_norm`` (each g_i is clipped to this norm over every parameter, as DoGE's code
clips each domain's gradient; None for no clipping) and ``score_params`` (a regex over the
unwrapped parameter names: the inner products use only these).

This provider computes the step's gradient itself. For each domain of the batch, g_i is the
gradient of that domain's mean token loss over all of its rows on every rank (micro-batched),
summed over ranks, then clipped. The strategy receives no vector, only what its update needs,
as float64 numpy: ``gram``, the inner products over ``score_params`` of [g_1 … g_K] and, when
``target_gradient`` is computed in the same step, the target gradient as row K
(``target_index``); ``norms`` (each g_i's norm before clipping) and ``present``. A domain
absent from the step has g_i = 0. After the strategy's update the model's gradient becomes
Σ_i w_i g_i with the strategy's loss weights. Nothing of the model's size carries from one step
to the next: the buffers are scratch space, overwritten before they are read (see
models/flat_params.py). Memory above a uniform run: one buffer per domain present in the step
(an out-of-domain target's domain never is) and the target's; the combined gradient is formed
in place in one of the domain buffers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.flat_params import FlatParams, clip_in_place, gram_matrix
from models.signals.base import SignalProvider, StepContext
from models.step import to_device


class DomainGradients(SignalProvider):
    uses = frozenset({"target_gradient"})
    computes_step_gradient = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.flat = FlatParams(self.handles.raw_model)
        self.runs = self.flat.column_runs(self.options.get("score_params"))
        self.grads: list[torch.Tensor | None] | None = None

    @classmethod
    def parameter_copies(cls, num_domains: int) -> float:
        return num_domains  # one flat gradient per domain present in the step

    def forward_backward(self, step: StepContext) -> torch.Tensor:
        passes, batch = self.handles.passes, step.batch
        k = len(self.handles.domains)
        # Every rank knows the domains of the whole step: all join the same all-reduces below.
        counts = passes.domain_counts(batch)
        loss_sum = torch.zeros(k, dtype=torch.float64, device=passes.device)
        self.grads = [None] * k
        # Norms stay on the device (the strategy gets them with the step's other stats, in one transfer).
        self.norms, self.present = torch.zeros(k, dtype=torch.float64, device=passes.device), counts > 0
        micro = max(1, batch.micro[0].stop - batch.micro[0].start)
        clip = self.options.get("clip_norm")
        for slot, i in enumerate(np.flatnonzero(self.present)):
            rows = np.flatnonzero(batch.domain_ids == i)  # on the host: no device sync
            self.grads[i] = self.flat.buffer(slot)
            if len(rows) == 0:  # present on another rank only: this rank adds a zero gradient
                self.grads[i].zero_()
            for n, start in enumerate(range(0, len(rows), micro)):
                chunk = rows[start:start + micro]
                token_loss = passes.token_loss(self.handles.model, batch.tokens[to_device(chunk, passes.device)])
                loss_sum[i] += token_loss.detach().sum().double()
                # the gradient of the domain's mean token loss
                self.flat.write_grad(self.grads[i], token_loss.sum() / float(counts[i]), accumulate=n > 0)
                passes.count("backward", token_loss.numel())
            passes.all_reduce(self.grads[i])
            self.norms[i] = clip_in_place(self.grads[i], clip)
        passes.all_reduce(loss_sum)
        return loss_sum

    def compute(self, step: StepContext) -> dict[str, Any]:
        k = len(self.grads)
        rows = [int(i) for i in np.flatnonzero(self.present)]
        vectors = [self.grads[i] for i in rows]
        target = step.shared.get("target_gradient")
        if target is not None:
            rows.append(k)
            vectors.append(target)
        size = k + 1 if target is not None else k
        gram = torch.zeros(size * size, dtype=torch.float64, device=vectors[0].device)  # an absent domain's g_i is 0
        index = to_device((np.asarray(rows)[:, None] * size + np.asarray(rows)[None, :]).ravel(), gram.device)
        gram[index] = gram_matrix(vectors, self.runs).flatten()
        return {"gram": gram.view(size, size), "norms": self.norms.clone(), "present": self.present.copy(),
                "target_index": k if target is not None else None}

    def apply_gradient(self, loss_weights: np.ndarray | None) -> None:
        """Σ_i w_i g_i over the domains present, summed in place into the first one's buffer."""
        weights = np.ones(len(self.grads)) if loss_weights is None else loss_weights
        present = [int(i) for i in np.flatnonzero(self.present)]
        combined = self.grads[present[0]].mul_(float(weights[present[0]]))
        for i in present[1:]:
            combined.add_(self.grads[i], alpha=float(weights[i]))
        self.grads = None
        self.flat.set_grad(combined)
