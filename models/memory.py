"""An estimate of a training run's peak device memory, to choose micro-batches before a run.

Torch-free, so the config check and the paper grid's test can use it. What it counts:

- **States**, per parameter: fp32 weights, gradients and AdamW's two moments (16 bytes), the
  bf16 copies autocast keeps of every weight during a forward (2 bytes), and DDP's gradient
  buckets (4 bytes) when there are several processes.
- **Activations** saved for backward, per token: ``n_layer × n_embd × 61`` bytes under bf16
  autocast (113 in fp32), measured, not derived: tests/test_memory.py counts the bytes autograd
  saves for a GPT-2 forward and checks them; and the loss's inputs (the final hidden states in
  fp32 and the target id). With SDPA nothing grows with the square of the sequence. No logits:
  the loss (models/token_loss.py) computes them chunk by chunk and keeps none.
- **The loss's workspace**: one chunk of ``loss_chunk_tokens`` tokens' logits alive at a time
  (in the matmul's dtype, in fp32, and their gradient: ``LOSS_WORKSPACE_BYTES`` a token per
  vocabulary entry), and the output layer's gradient before it is added to the parameters'.
- **What a strategy's signals add**, in copies of the fp32 parameters, as each signal's provider
  declares (``SignalProvider.parameter_copies``; ``models.signals.parameter_copies`` sums them):
  one gradient per domain present in the step and the target's (DoGE), the frozen reference
  model (DoReMi).
- A step whose loss needs its own signals' weights (DoReMi's proxy with ``reweighted_step:
  one_forward``) keeps the activations of the whole local batch, not of one micro-batch.

- **The CUDA context** (kernels, cuBLAS and NCCL workspaces): ``CUDA_CONTEXT_BYTES``, an
  assumption (0.5–1 GiB on current drivers), not a measurement.

It leaves out the allocator's fragmentation (a few hundred MB to a few GB); ``HEADROOM`` keeps
that margin when a micro-batch is judged to fit.
"""

from __future__ import annotations

from mixbench.model_sizes import ModelSize, approx_parameters

GIB = 2**30
HEADROOM = 0.85  # a micro-batch fits a device when the estimate is under this fraction of its memory

# bytes per token per layer per unit of width (tests/test_memory.py)
ACTIVATION_BYTES = {"bf16": 61, "fp32": 113}
# Logits of one chunk of the loss: low-precision and fp32 copies, softmax, gradient (fp32 and low precision).
LOSS_WORKSPACE_BYTES = 16
# fp32 logits of one chunk: 256 MiB on a GPU; 16 MiB on a CPU, where a chunk that stays in its
# caches is faster (the default grid's tiny model then steps about as fast as with full logits).
LOSS_CHUNK_LOGIT_BYTES = {"cuda": 2**28, "cpu": 2**24}
CUDA_CONTEXT_BYTES = 0.75 * GIB  # assumed, see above


def loss_chunk_tokens(vocab_size: int, device_type: str = "cuda") -> int:
    """Tokens per chunk of the loss: fp32 logits of ``LOSS_CHUNK_LOGIT_BYTES`` (1,280 tokens for
    GPT-2's 50,304 entries on a GPU), a multiple of 128, at least 128: large enough that the
    output layer's matmuls stay efficient, small enough that the chunk is a minor part of the memory."""
    budget = LOSS_CHUNK_LOGIT_BYTES.get(device_type, LOSS_CHUNK_LOGIT_BYTES["cuda"])
    return max(128, budget // (4 * vocab_size) // 128 * 128)


def training_memory(size: ModelSize, *, vocab_size: int, seq_len: int, micro_batch: int, bf16: bool,
                    world_size: int = 1, signal_copies: float = 0.0, kept_rows: int | None = None,
                    cuda: bool = True) -> dict[str, float]:
    """The estimate in bytes, by part, and its ``total``. ``signal_copies``: what the strategy's
    signals hold, in fp32 copies of the parameters. ``kept_rows``: the rows whose activations
    are alive at once when more than one micro-batch's (a step that keeps its graphs). ``cuda``:
    on a GPU (its context counted), else on a CPU."""
    precision = "bf16" if bf16 else "fp32"
    params = approx_parameters(size, vocab_size)
    state_bytes = 16 + (2 if bf16 else 0) + (4 if world_size > 1 else 0)
    rows = max(micro_batch, kept_rows or 0)
    tokens = rows * seq_len
    chunk = min(loss_chunk_tokens(vocab_size, "cuda" if cuda else "cpu"), micro_batch * seq_len)
    parts = {
        "states": params * state_bytes,
        "activations": tokens * (size.n_layer * size.n_embd * ACTIVATION_BYTES[precision] + 4 * size.n_embd + 8),
        "loss_workspace": chunk * vocab_size * LOSS_WORKSPACE_BYTES + 4 * vocab_size * size.n_embd,
        "signals": 4 * params * signal_copies,
        "cuda_context": CUDA_CONTEXT_BYTES if cuda else 0,
    }
    parts["total"] = sum(parts.values())
    return parts


def largest_fitting_micro_batch(size: ModelSize, *, device_bytes: float, local_batch: int, **kwargs) -> int | None:
    """The largest micro-batch that divides ``local_batch`` and whose estimate is under
    ``HEADROOM`` of ``device_bytes``; None if not even 1 fits."""
    for micro in sorted((m for m in range(1, local_batch + 1) if local_batch % m == 0), reverse=True):
        if training_memory(size, micro_batch=micro, **kwargs)["total"] <= HEADROOM * device_bytes:
            return micro
    return None


def describe(parts: dict[str, float]) -> str:
    return ", ".join(f"{name} {value / GIB:.1f}" for name, value in parts.items() if name != "total") + \
        f" GiB: {parts['total'] / GIB:.1f} GiB in all"
