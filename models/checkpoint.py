"""Checkpoints holding everything needed to resume a run exactly.

Model, optimizer, LR scheduler, strategy state, signal providers' state and torch RNG of every rank,
and the step (training batches are keyed by step: no sampler state). Written atomically: an
interrupted save leaves the previous checkpoint intact.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from mixbench.io import atomic_path

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path) -> dict[str, Any] | None:
    path = Path(path)
    if not path.exists():
        return None
    # weights_only=False: the state holds numpy arrays and RNG states, all written by us.
    return torch.load(path, map_location="cpu", weights_only=False)
