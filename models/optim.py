"""Optimisation settings of a run: batch shape, AdamW, warmup + cosine schedule, device."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class LoopSettings:
    steps: int
    batch_size: int
    micro_batch_size: int
    seq_len: int
    lr: float
    min_lr_ratio: float
    warmup_steps: int
    weight_decay: float
    beta1: float
    beta2: float
    grad_clip: float
    checkpoint_every: int
    log_flush_steps: int = 10  # log.csv and trace.jsonl reach the disk at least this often...
    log_flush_seconds: float = 30.0  # ...or this often, whichever comes first
    reweighted_step: str = "one_forward"  # or "two_forwards": see models/step.py
    eval_every: int | None = None  # held-out loss every this many steps; None: ~10 points (models/heldout.py)
    tensorboard: bool = True  # event files beside log.csv (models/tensorboard_log.py)
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bf16: bool = False
    rank: int = 0
    world_size: int = 1
    peak_tflops: float | None = None  # per device, for MFU (models/throughput.py); None: not logged

    @classmethod
    def from_config(cls, training: dict, steps: int, **runtime) -> "LoopSettings":
        """Settings from the config's ``training`` section; ``runtime`` sets device, bf16, rank,
        world_size and the device's peak_tflops."""
        runtime_fields = ("steps", "device", "bf16", "rank", "world_size", "peak_tflops")
        names = [f for f in cls.__dataclass_fields__ if f in training and f not in runtime_fields]
        return cls(steps=steps, **{name: training[name] for name in names}, **runtime)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` (step is 0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer: torch.optim.Optimizer, s: LoopSettings) -> torch.optim.lr_scheduler.LambdaLR:
    """The learning rate of ``lr_factor`` at each step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda i: lr_factor(i, s.warmup_steps, s.steps, s.min_lr_ratio))


def make_optimizer(model: torch.nn.Module, s: LoopSettings) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm gains (nanoGPT's grouping)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(s.beta1, s.beta2), fused=s.device.type == "cuda")
