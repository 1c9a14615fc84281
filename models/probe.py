"""Per-example gradient features on probe batches: the ``example_gradient_features`` signal.

Probing runs in eval mode (dropout breaks vmap, and would draw from the training RNG) on its own
sampler stream, and computes gradients functionally without touching ``.grad``, so it never
changes the training trajectory. Per-example gradients of each sequence's mean token loss over
a parameter subset S (a regex; by default the last transformer block) come from torch.func
(``functional_call`` + ``vmap(grad)``) in chunks, and each chunk is sketched to d dimensions
before the next is computed, so at most ``chunk`` per-example gradients exist at once. The
sketch is a CountSketch: coordinate j is added, with sign s(j), to bucket h(j); h and s are
drawn from the seed. A dense Gaussian projection would need P × d floats (812 MB for one GPT-2
block at d = 1024). Parameter names are matched on the plain module (torch.compile's
``_orig_mod.`` and DDP's ``module.`` prefixes removed).
"""

from __future__ import annotations

import re
import warnings

import numpy as np
import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from mixbench.errors import ConfigError
from models.flat_params import unwrap
from models.gpt2 import unpadded_vocab_size


def default_probe_params(model) -> str:
    """The last transformer block of a GPT-2."""
    return rf"transformer\.h\.{model.config.n_layer - 1}\..*"


class GradientProbe:
    def __init__(self, model, pattern: str | None, sketch_dim: int, seed: int, device: torch.device, chunk: int = 8):
        model = unwrap(model)
        pattern = pattern or default_probe_params(model)
        named = dict(model.named_parameters())
        self.names = [n for n in named if re.fullmatch(pattern, n)]
        if not self.names:
            raise ConfigError(f"probe_params {pattern!r} matches no parameter (names look like {next(iter(named))!r})")
        embedding = model.get_input_embeddings().weight
        if any(named[n] is embedding for n in self.names):
            # Tied to lm_head in GPT-2: its per-example gradients are ~5x the memory of a block.
            raise ConfigError(f"probe_params {pattern!r} includes the tied token embedding; choose other parameters")
        self.model, self.chunk, self.device = model, chunk, device
        size = sum(named[n].numel() for n in self.names)
        generator = torch.Generator().manual_seed(seed)
        self.buckets = torch.randint(0, sketch_dim, (size,), generator=generator).to(device)
        self.signs = (torch.randint(0, 2, (size,), generator=generator) * 2 - 1).float().to(device)
        self.sketch_dim = sketch_dim

    def per_example_gradients(self, tokens: torch.Tensor):
        """Flattened per-example gradients over S, one chunk of shape (≤ chunk, |S|) at a time."""
        params = {n: p.detach() for n, p in self.model.named_parameters()}
        vocab = unpadded_vocab_size(self.model)
        selected = {n: params.pop(n) for n in self.names}

        def loss(chosen, x, y):
            logits = functional_call(self.model, {**params, **chosen}, args=(), kwargs={"input_ids": x[None]}).logits
            return F.cross_entropy(logits[0, :, :vocab].float(), y)  # the embedding's padding is never scored

        per_example = vmap(grad(loss), in_dims=(None, 0, 0))
        for chunk in tokens.split(self.chunk):
            grads = per_example(selected, chunk[:, :-1], chunk[:, 1:])
            yield torch.cat([grads[n].reshape(len(chunk), -1) for n in self.names], dim=1)

    def sketch(self, flat: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(flat.shape[0], self.sketch_dim, device=flat.device, dtype=flat.dtype)
        return out.index_add_(1, self.buckets, flat * self.signs)

    def features(self, tokens: torch.Tensor) -> np.ndarray:
        """Sketched per-example gradient features φ, shape (n, d)."""
        was_training = self.model.training
        self.model.eval()
        try:
            with warnings.catch_warnings():
                # CPU SDPA has no vmap batching rule: a slower fallback, same numbers.
                warnings.filterwarnings("ignore", message="There is a performance drop")
                sketches = [self.sketch(flat) for flat in self.per_example_gradients(tokens.to(self.device))]
                return torch.cat(sketches).cpu().numpy()
        finally:
            self.model.train(was_training)
