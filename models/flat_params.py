"""A model's trainable parameters seen as one flat vector, for gradient-level signals.

Per-domain and target gradients live in flat buffers on the model's device. This module
maps between those buffers and the parameters without making extra copies of the model's
size: gradients are written slice by slice, inner products are taken chunk by chunk, and the
combined gradient becomes the parameters' ``.grad`` as views of one buffer.

The buffers are scratch space reused from step to step (``buffer(i)``): every step overwrites
a buffer before reading it, so nothing carries over. A GPU's caching allocator would reuse the
memory anyway; on a CPU, fresh buffers of the model's size cost a page fault per 4 kB each
step (about 2 s for 7 copies of GPT-2 small).
"""

from __future__ import annotations

import re

import numpy as np
import torch

from mixbench.errors import ConfigError

# Columns per chunk of the float64 inner products: small enough on a CPU for the chunk's
# float64 copy to stay in cache (85M parameters × 7 vectors: 1.4 s, against 6 s with 1M
# columns); on a GPU larger chunks keep the kernel launches few.
GRAM_CHUNK = {"cpu": 1 << 14, "cuda": 1 << 22}


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The plain module under DDP (``.module``) and torch.compile (``._orig_mod``): parameter
    names without their ``module.`` / ``_orig_mod.`` prefixes."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


class FlatParams:
    def __init__(self, model: torch.nn.Module):
        named = [(n, p) for n, p in unwrap(model).named_parameters() if p.requires_grad]  # tied weights once
        self.names = [n for n, _ in named]
        self.params = [p for _, p in named]
        self.offsets = np.cumsum([0] + [p.numel() for p in self.params])
        self.size = int(self.offsets[-1])
        self.device = self.params[0].device
        self._buffers: list[torch.Tensor] = []

    def buffer(self, index: int) -> torch.Tensor:
        """Scratch vector ``index`` of the parameters' size; its content is whatever was left in it."""
        while len(self._buffers) <= index:
            self._buffers.append(torch.empty(self.size, device=self.device, dtype=self.params[0].dtype))
        return self._buffers[index]

    def write_grad(self, out: torch.Tensor, loss: torch.Tensor, accumulate: bool) -> None:
        """out = ∇ loss (or out += ∇ loss), slice by slice. Uses autograd.grad: DDP's hooks and
        the parameters' ``.grad`` stay untouched."""
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)
        for g, start, stop in zip(grads, self.offsets[:-1], self.offsets[1:]):
            if g is None:
                if not accumulate:
                    out[start:stop] = 0
            elif accumulate:
                out[start:stop] += g.reshape(-1)
            else:
                out[start:stop] = g.reshape(-1)

    def set_grad(self, flat: torch.Tensor) -> None:
        """Make ``flat`` the parameters' gradient (views, no copy)."""
        for p, start, stop in zip(self.params, self.offsets[:-1], self.offsets[1:]):
            p.grad = flat[start:stop].view_as(p)

    def column_runs(self, pattern: str | None) -> list[tuple[int, int]]:
        """Contiguous column ranges of the parameters whose (unwrapped) names match ``pattern``."""
        regex = re.compile(pattern or ".*")
        runs: list[tuple[int, int]] = []
        for name, start, stop in zip(self.names, self.offsets[:-1], self.offsets[1:]):
            if regex.fullmatch(name):
                if runs and runs[-1][1] == start:
                    runs[-1] = (runs[-1][0], int(stop))
                else:
                    runs.append((int(start), int(stop)))
        if not runs:
            raise ConfigError(f"parameter pattern {pattern!r} matches no parameter; names look like {self.names[0]!r}")
        return runs


def clip_in_place(vector: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Scale ``vector`` to norm ``max_norm`` (+1e-6) if it is longer; return its norm before, as a
    float64 device scalar. No host synchronisation: the choice is made on the device (a factor of
    exactly 1 where it does not clip), in the arithmetic a Python scalar factor would have."""
    norm = vector.norm().double()
    if max_norm is not None:
        factor = torch.where(norm > max_norm, max_norm / (norm + 1e-6), torch.ones_like(norm))
        vector.mul_(factor.to(vector.dtype))
    return norm


def gram_matrix(vectors: list[torch.Tensor], runs: list[tuple[int, int]]) -> torch.Tensor:
    """⟨v_a, v_b⟩ over the given column ranges, in float64, chunk by chunk, on the device."""
    n = len(vectors)
    gram = torch.zeros(n, n, dtype=torch.float64, device=vectors[0].device)
    chunk = GRAM_CHUNK.get(vectors[0].device.type, GRAM_CHUNK["cuda"])
    for start, stop in runs:
        for lo in range(start, stop, chunk):
            hi = min(stop, lo + chunk)
            block = torch.stack([v[lo:hi] for v in vectors]).double()
            gram += block @ block.T
    return gram
