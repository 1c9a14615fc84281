"""Per-domain gradients for strategies that declare ``domain_gradients`` (DoGE).

For each domain in the step: the gradient of that domain's mean token loss over its rows
(summed over ranks), clipped to the strategy's norm. Optionally the gradient of a target
batch (``target_gradient``). The strategy scores domains on a parameter subset of these and
returns combination weights w; the model's gradient becomes Σ_i w_i g_i over the domains
present. Full per-domain copies are kept: K × (number of parameters) floats per step.
"""

from __future__ import annotations

import re

import numpy as np
import torch

from models.step import Batch, StepPasses


class DomainGradients:
    def __init__(self, model: torch.nn.Module, passes: StepPasses, score_params: str | None):
        named = list(model.named_parameters())  # tied weights appear once
        self.params = [p for _, p in named if p.requires_grad]
        pattern = re.compile(score_params or ".*")
        masks = [torch.full((p.numel(),), bool(pattern.fullmatch(n)), dtype=torch.bool)
                 for n, p in named if p.requires_grad]
        self.score_mask = torch.cat(masks).to(passes.device)
        if not self.score_mask.any():
            raise ValueError(f"score_params {score_params!r} matches no parameter; names look like {named[0][0]!r}")
        self.model, self.passes = model, passes
        self.bytes_per_copy = sum(p.numel() * p.element_size() for p in self.params)

    def _flat_grad(self, loss: torch.Tensor, tokens: int) -> torch.Tensor:
        self.passes.count("backward", tokens)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        return torch.cat([(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(grads, self.params)])

    def domain_gradients(self, batch: Batch, k: int, clip_norm: float | None):
        """Per-domain (clipped) full gradients {i: flat}, summed token losses and token counts."""
        p = self.passes
        counts = torch.bincount(batch.domains, minlength=k).double() * p.seq_len
        p.all_reduce(counts)  # every rank must join the same sequence of all-reduces below
        loss_sum = torch.zeros(k, dtype=torch.float64, device=p.device)
        grads, norms = {}, np.full(k, np.nan)
        for i in np.flatnonzero(counts.cpu().numpy() > 0):
            rows = torch.nonzero(batch.domains == i).flatten()
            grad = torch.zeros(self.score_mask.numel(), device=p.device)
            for chunk in rows.split(max(1, batch.micro[0].stop - batch.micro[0].start)):
                if len(chunk) == 0:  # present on another rank only: this rank adds a zero gradient
                    continue
                token_loss = p.token_loss(self.model, batch.tokens[chunk])
                loss_sum[i] += token_loss.detach().sum().double()
                grad += self._flat_grad(token_loss.sum() / counts[i], token_loss.numel())  # mean over the domain's tokens
            p.all_reduce(grad)
            norms[i] = float(grad.norm())
            if clip_norm is not None and norms[i] > clip_norm:
                grad *= clip_norm / (norms[i] + 1e-6)
            grads[int(i)] = grad
        p.all_reduce(loss_sum)
        return grads, norms, loss_sum.cpu().numpy(), counts.cpu().numpy()

    def target_gradient(self, tokens: torch.Tensor) -> torch.Tensor:
        """Gradient of the mean token loss of a target batch, averaged over ranks."""
        token_loss = self.passes.token_loss(self.model, tokens)
        grad = self._flat_grad(token_loss.mean(), token_loss.numel())
        self.passes.all_reduce(grad)
        return grad / self.passes.world_size

    def apply(self, grads: dict[int, torch.Tensor], weights: np.ndarray) -> None:
        """Set the model's gradient to Σ_i w_i g_i over the domains present."""
        combined = sum(float(weights[i]) * g for i, g in grads.items())
        offset = 0
        for param in self.params:
            n = param.numel()
            param.grad = combined[offset : offset + n].view_as(param).clone()
            offset += n
