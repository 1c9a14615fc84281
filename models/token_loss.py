"""Per-token next-token cross-entropy without the full logits: the output layer, the log-softmax
and the target's pick, chunk by chunk of tokens.

The plain path (``model(x).logits`` then ``F.cross_entropy(logits.float())``) holds the
(tokens × vocabulary) logits in the matmul's dtype, again in fp32, and their gradient: about
12 bytes per token per vocabulary entry (600 kB a token for GPT-2's 50,304 entries), all of it
written and read through device memory. Here ``ChunkedTokenLoss`` keeps only the final hidden
states for backward; each chunk's logits exist while that chunk is computed, in forward and again
in backward (recomputed: one more output-layer matmul, ~2·d·V FLOPs a token, about 10% of GPT-2
small's step, for logits that are never stored). Under torch.compile the chunk's cast,
log-softmax and gradient fuse into the matmuls' neighbours.

Numerics: each chunk's loss is ``F.cross_entropy`` of its fp32 logits, as in the plain path
(equal within fp32 rounding, tests/test_loss_path.py), the gradient is ``g · (softmax −
onehot)``; the matmuls run in the dtype autocast gives them (bf16 under bf16 autocast, as the
plain path's output layer). The chunk size: models/memory.py. Vocabulary rows beyond
``vocab_size`` (the embedding's padding, models/gpt2.py) are never scored: they get no logit,
so their gradient is exactly zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from models.memory import loss_chunk_tokens


def _matmul_dtype(hidden: torch.Tensor) -> torch.dtype:
    """The dtype autocast gives the output layer's matmul, or the hidden states' own."""
    device = hidden.device.type
    if torch.is_autocast_enabled(device):
        return torch.get_autocast_dtype(device)
    return hidden.dtype


class ChunkedTokenLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                chunk: int, dtype: torch.dtype) -> torch.Tensor:
        """hidden (N, d), weight (V_padded, d), targets (N,) → loss (N,) in fp32."""
        ctx.save_for_backward(hidden, weight, targets)
        ctx.vocab_size, ctx.chunk, ctx.dtype = vocab_size, chunk, dtype
        # The matmul keeps the padded width (a multiple of the tensor cores' tile); the padding's
        # logits are dropped before the softmax.
        matrix = weight.to(dtype)
        losses = []
        with torch.autocast(hidden.device.type, enabled=False):
            for h, y in zip(hidden.split(chunk), targets.split(chunk)):
                logits = (h.to(dtype) @ matrix.T)[:, :vocab_size]
                losses.append(F.cross_entropy(logits.float(), y, reduction="none"))
        return torch.cat(losses)

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        hidden, weight, targets = ctx.saved_tensors
        vocab, chunk, dtype = ctx.vocab_size, ctx.chunk, ctx.dtype
        matrix = weight.to(dtype)
        padding = weight.shape[0] - vocab
        grad_hidden = torch.empty_like(hidden)
        grad_weight = torch.zeros_like(weight)
        with torch.autocast(hidden.device.type, enabled=False):
            for start in range(0, hidden.shape[0], chunk):
                h = hidden[start:start + chunk].to(dtype)
                y = targets[start:start + chunk]
                grad_logits = torch.softmax((h @ matrix.T)[:, :vocab].float(), dim=-1)
                grad_logits.scatter_add_(1, y[:, None], torch.full_like(y[:, None], -1.0, dtype=grad_logits.dtype))
                grad_logits.mul_(grad_loss[start:start + chunk, None])
                if padding:  # zero columns for the padding: its rows' gradient is exactly zero
                    grad_logits = F.pad(grad_logits, (0, padding))
                grad_logits = grad_logits.to(dtype)
                grad_hidden[start:start + chunk] = grad_logits @ matrix
                if dtype == weight.dtype:
                    grad_weight.addmm_(grad_logits.T, h)
                else:
                    grad_weight += (grad_logits.T @ h).to(weight.dtype)
        return grad_hidden, grad_weight, None, None, None, None


def chunked_token_loss(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, vocab_size: int,
                       chunk: int | None = None) -> torch.Tensor:
    """Per-token cross-entropy of ``hidden @ weight[:vocab_size].T`` against ``targets``, shape of
    ``targets``, fp32. ``chunk``: tokens per chunk (default: models/memory.py's budget)."""
    chunk = chunk or loss_chunk_tokens(vocab_size, hidden.device.type)
    flat = hidden.reshape(-1, hidden.shape[-1])
    loss = ChunkedTokenLoss.apply(flat, weight, targets.reshape(-1), vocab_size, chunk, _matmul_dtype(hidden))
    return loss.view(targets.shape)
