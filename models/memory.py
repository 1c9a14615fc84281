"""An estimate of a training run's peak device memory, to choose micro-batches before a run.

Torch-free, so the config check and the paper grid's test can use it. What it counts:

- **States**, per parameter: fp32 weights, gradients and AdamW's two moments (16 bytes), the
  bf16 copies autocast keeps of every weight during a forward (2 bytes), and DDP's gradient
  buckets (4 bytes) when there are several processes.
- **Activations** saved for backward, per token: ``n_layer × n_embd × 64`` bytes under bf16
  autocast (120 in fp32), plus ``vocab × 4`` bytes of fp32 logits. The coefficients are
  measured, not derived: tests/test_memory.py counts the bytes autograd saves for a GPT-2
  forward and checks them. With SDPA nothing grows with the square of the sequence.
- **The logits' gradient** during the backward of a micro-batch (``vocab × 6`` bytes a token in
  bf16, 4 in fp32), alive while the activations still are.
- **What a strategy's signals add**, in copies of the fp32 parameters, as each signal's provider
  declares (``SignalProvider.parameter_copies``; ``models.signals.parameter_copies`` sums them):
  one gradient per domain present in the step and the target's (DoGE), the frozen reference
  model (DoReMi).
- A step whose loss needs its own signals' weights (DoReMi's proxy with ``reweighted_step:
  one_forward``) keeps the activations of the whole local batch, not of one micro-batch.

It leaves out the allocator's fragmentation and CUDA's workspace (a few hundred MB to a few GB);
``HEADROOM`` keeps that margin when a micro-batch is judged to fit.
"""

from __future__ import annotations

from models.sizes import ModelSize, approx_parameters

GIB = 2**30
HEADROOM = 0.85  # a micro-batch fits a device when the estimate is under this fraction of its memory

# bytes per token per layer per unit of width, and per token per vocabulary entry (tests/test_memory.py)
ACTIVATION_BYTES = {"bf16": 64, "fp32": 120}
LOGIT_BYTES = {"bf16": 4, "fp32": 4}  # the fp32 logits cross-entropy keeps
LOGIT_GRAD_BYTES = {"bf16": 6, "fp32": 4}

def training_memory(size: ModelSize, *, vocab_size: int, seq_len: int, micro_batch: int, bf16: bool,
                    world_size: int = 1, signal_copies: float = 0.0, kept_rows: int | None = None) -> dict[str, float]:
    """The estimate in bytes, by part, and its ``total``. ``signal_copies``: what the strategy's
    signals hold, in fp32 copies of the parameters. ``kept_rows``: the rows whose activations
    are alive at once when more than one micro-batch's (a step that keeps its graphs)."""
    precision = "bf16" if bf16 else "fp32"
    params = approx_parameters(size, vocab_size)
    state_bytes = 16 + (2 if bf16 else 0) + (4 if world_size > 1 else 0)
    rows = max(micro_batch, kept_rows or 0)
    tokens = rows * seq_len
    parts = {
        "states": params * state_bytes,
        "activations": tokens * (size.n_layer * size.n_embd * ACTIVATION_BYTES[precision]
                                 + vocab_size * LOGIT_BYTES[precision]),
        "logit_gradient": micro_batch * seq_len * vocab_size * LOGIT_GRAD_BYTES[precision],
        "signals": 4 * params * signal_copies,
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
