"""Tokens per second and model FLOPs utilisation (MFU) of a training run.

MFU (Chowdhery et al. 2022, PaLM, App. B) is the FLOPs the model's training needs per second,
over the hardware's peak: per training token, 6N for the forward and backward of N parameters
plus 12·L·d·T for attention over a sequence of T (L layers, width d). Passes a strategy adds
(a reference model's forward, per-domain gradients, probes) are not model FLOPs: they show as a
lower MFU, which is what a user comparing strategies wants to see.

The peak is the device's dense bf16 tensor throughput from ``PEAK_BF16_TFLOPS``, matched on the
CUDA device name (most specific name first), or ``training.peak_tflops`` (per device; for a
GPU missing from the table, or a CPU). No peak known: MFU is left empty, never guessed.
"""

from __future__ import annotations

# Dense (not sparse) bf16 tensor-core TFLOP/s from the vendors' data sheets. Checked in order:
# a more specific name before one it contains.
PEAK_BF16_TFLOPS: list[tuple[str, float]] = [
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("H800", 989.0),
    ("B200", 2250.0),
    ("A100", 312.0),
    ("A800", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("A6000", 155.0),  # RTX A6000
    ("MI300X", 1307.0),
    ("MI250X", 383.0),
]


def peak_tflops(device_name: str | None, override: float | None = None) -> float | None:
    """The peak bf16 TFLOP/s of one device: the override if given, else the table's entry for
    the first name contained in ``device_name``, else None."""
    if override is not None:
        return float(override)
    if not device_name:
        return None
    for name, tflops in PEAK_BF16_TFLOPS:
        if name in device_name:
            return tflops
    return None


def model_flops_per_token(num_parameters: int, n_layer: int, n_embd: int, seq_len: int) -> int:
    """Training FLOPs per token: 6N + 12·L·d·T (PaLM App. B)."""
    return 6 * num_parameters + 12 * n_layer * n_embd * seq_len


def mfu(tokens_per_second: float, flops_per_token: int, peak: float | None, devices: int) -> float | None:
    """Model FLOPs utilisation of ``devices`` devices of ``peak`` TFLOP/s each; None without a peak."""
    if peak is None or tokens_per_second <= 0:
        return None
    return tokens_per_second * flops_per_token / (peak * 1e12 * devices)
