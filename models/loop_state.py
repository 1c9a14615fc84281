"""The training loop's checkpoint: everything an interrupted run needs to go on exactly as if
it had not stopped, and its resumption.

What a checkpoint saves is explicit: the loop's own progress (``LoopState``: step, tokens,
seconds, the mixture the next step samples with), the state dicts of the parts it was built with
(``CheckpointParts``: model, optimizer, scheduler, strategy, signal providers, pass counters) and
each process's RNG. ``Checkpoints`` writes and restores them (models/checkpoint.py's folders).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from mixbench.lineage import differences
from models.checkpoint import load_latest, read_checkpoint, remove_checkpoints, save_checkpoint
from models.optim import LoopSettings
from strategies.base import Strategy

# Bumped when the checkpoint's layout changes: an older checkpoint is not resumed.
CHECKPOINT_FORMAT = 5


@dataclass
class LoopState:
    """The loop's progress, which it advances step by step and a checkpoint saves."""
    weights: np.ndarray  # the mixture the next step samples with
    step: int = 0  # steps taken
    tokens_seen: int = 0  # training tokens of those steps, every process's
    elapsed: float = 0.0  # seconds of training, held-out measurements excluded
    heldout_seconds: float = 0.0  # seconds of held-out measurements (models/heldout.py)


@dataclass(frozen=True, kw_only=True)
class CheckpointParts:
    """The parts of a loop whose state a checkpoint saves beside its LoopState."""
    model: torch.nn.Module  # unwrapped (no DDP, no torch.compile): its names are the saved model's
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    strategy: Strategy
    providers: list  # the signal providers (models/signals/), each with its own state
    token_passes: dict[str, int]  # the step passes' counters (models/step.py), restored in place


def rng_state(device: torch.device) -> dict:
    """This process's RNG (dropout masks): torch's, and the device's on a GPU."""
    return {"torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch_rng"])
    if state["cuda_rng"] is not None and device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda_rng"], device)


class Checkpoints:
    """A run's checkpoints in ``folder``: a checkpoint of another ``fingerprint`` (configuration)
    or format, or made from other ``inputs`` (models/run_inputs.py: token files, tokenizer, runs
    before it), is not resumed. ``inputs`` None: a loop built without a run (tests, benchmarks)."""

    def __init__(self, *, folder: Path, fingerprint: str, settings: LoopSettings, parts: CheckpointParts,
                 inputs: dict | None = None):
        self.folder, self.fingerprint, self.settings, self.parts = Path(folder), fingerprint, settings, parts
        self.inputs = inputs

    def gather(self, state: LoopState) -> dict:
        """The checkpoint of ``state`` and the parts, on every process: each saves its own RNG and
        providers' state (training batches are keyed by step; each rank has its own dropout RNG)."""
        s, parts = self.settings, self.parts
        local = {"providers": {p.name: p.state_dict() for p in parts.providers}, **rng_state(s.device)}
        samplers = [local]
        if s.world_size > 1:
            samplers = [None] * s.world_size
            dist.all_gather_object(samplers, local)
        return {
            "format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint, "inputs": self.inputs,
            "step": state.step, "tokens_seen": state.tokens_seen, "elapsed": state.elapsed,
            "heldout_seconds": state.heldout_seconds, "token_passes": dict(parts.token_passes),
            "weights": state.weights, "model": parts.model.state_dict(),
            "optimizer": parts.optimizer.state_dict(), "scheduler": parts.scheduler.state_dict(),
            "strategy": parts.strategy.state_dict(), "samplers": samplers,
        }

    def save(self, state: LoopState, logs: list) -> None:
        """A checkpoint of ``state`` and the parts (every process takes part; the first writes it,
        after flushing ``logs`` to the disk so that a resume finds every row before the step)."""
        checkpoint = self.gather(state)
        if self.settings.rank == 0:
            for log in logs:
                log.flush(sync=True)
            save_checkpoint(self.folder, state.step, checkpoint)

    def _load(self) -> tuple:
        """(folder, state) of the newest good checkpoint, or (None, None). The first process
        checks them (moving corrupt ones aside) and tells the others which one to read."""
        s = self.settings
        found = load_latest(self.folder) if s.rank == 0 else None
        if s.world_size == 1:
            return found or (None, None)
        choice = [None if found is None else str(found[0])]
        dist.broadcast_object_list(choice, src=0)
        if s.rank == 0 or choice[0] is None:
            return found or (None, None)
        # The first process has checked its checksums: the others only read it.
        return Path(choice[0]), read_checkpoint(Path(choice[0]), verify=False)

    def _not_this_runs(self, saved: dict) -> str | None:
        """Why a checkpoint is not this run's to resume, or None when it is."""
        if saved.get("fingerprint") != self.fingerprint or saved.get("format") != CHECKPOINT_FORMAT:
            return "was written under a different configuration or by an older version of the loop"
        if "inputs" not in saved or (saved["inputs"] is None and self.inputs is not None):
            return "records no inputs (written by an older version): what it was made from cannot be checked"
        changed = differences(saved["inputs"] or {}, self.inputs or {})
        if changed:
            return f"was made from other inputs ({'; '.join(changed)})"
        return None

    def resume(self, state: LoopState) -> bool:
        """Restore the parts and ``state`` from the newest good checkpoint of this configuration;
        False when there is none (the run starts at step 0)."""
        s, parts = self.settings, self.parts
        folder, saved = self._load()
        if saved is None:
            return False
        why = self._not_this_runs(saved)
        if why:
            if s.world_size > 1:
                dist.barrier()  # every process has read it before it goes
            if s.rank == 0:
                remove_checkpoints(self.folder)
                print(f"warning: {folder} {why}; removed this run's checkpoints and starting it from scratch",
                      file=sys.stderr)
            return False
        saved_ranks = len(saved["samplers"])
        if saved_ranks != s.world_size:
            # The data of every step is the same for any number of processes; only the dropout
            # masks (per-rank RNG) cannot continue as they would have.
            print(f"note: {folder} was written by {saved_ranks} process(es), this run has "
                  f"{s.world_size}; the batches continue unchanged, and each rank takes rank "
                  f"{min(s.rank, saved_ranks - 1)}'s RNG state (dropout masks differ from an uninterrupted run "
                  f"if dropout > 0)", file=sys.stderr)
        parts.model.load_state_dict(saved["model"])
        parts.optimizer.load_state_dict(saved["optimizer"])
        parts.scheduler.load_state_dict(saved["scheduler"])
        parts.strategy.load_state_dict(saved["strategy"])
        local = saved["samplers"][min(s.rank, saved_ranks - 1)]
        for provider in parts.providers:
            provider.load_state_dict(local["providers"][provider.name])
        set_rng_state(local, s.device)
        parts.token_passes.update(saved.get("token_passes", {}))
        state.step, state.tokens_seen, state.elapsed = saved["step"], saved["tokens_seen"], saved["elapsed"]
        state.heldout_seconds = saved["heldout_seconds"]
        state.weights = np.asarray(saved["weights"], dtype=np.float64)
        print(f"resumed from {folder} at step {state.step}", file=sys.stderr)
        return True
