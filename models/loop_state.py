"""The training loop's checkpoint: everything an interrupted run needs to go on exactly as if
it had not stopped (model, optimizer, scheduler, strategy, signal providers, RNG, counters), and
its resumption. A mixin of models/loop.py's TrainingLoop, whose attributes it reads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from models.checkpoint import load_latest, read_checkpoint, remove_checkpoints, save_checkpoint

# Bumped when the checkpoint's layout changes: an older checkpoint is not resumed.
CHECKPOINT_FORMAT = 5


class Checkpointing:
    def _rng_state(self) -> dict:
        return {"torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.s.device) if self.s.device.type == "cuda" else None}

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.s.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.s.device)

    def _state(self) -> dict:
        # Per rank: each rank has its own dropout RNG (training batches are keyed by step, and
        # providers' streams are the same on every rank).
        local = {"providers": {p.name: p.state_dict() for p in self.providers}, **self._rng_state()}
        samplers = [local]
        if self.s.world_size > 1:
            samplers = [None] * self.s.world_size
            dist.all_gather_object(samplers, local)
        return {
            "format": CHECKPOINT_FORMAT, "fingerprint": self.fingerprint,
            "step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
            "heldout_seconds": self.heldout_seconds,
            "token_passes": dict(self.passes.token_passes),
            "weights": self.weights, "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(), "samplers": samplers,
        }

    def save(self) -> None:
        self.drain()  # the log row of the step being saved, checked for NaN first
        state = self._state()
        if self.s.rank == 0:
            for log in self._logs():
                log.flush(sync=True)
            save_checkpoint(self.checkpoint_dir, self.step, state)

    def _load(self) -> tuple:
        """(folder, state) of the newest good checkpoint, or (None, None). The first process
        checks them (moving corrupt ones aside) and tells the others which one to read."""
        found = load_latest(self.checkpoint_dir) if self.s.rank == 0 else None
        if self.s.world_size == 1:
            return found or (None, None)
        choice = [None if found is None else str(found[0])]
        dist.broadcast_object_list(choice, src=0)
        if self.s.rank == 0 or choice[0] is None:
            return found or (None, None)
        # The first process has checked its checksums: the others only read it.
        return Path(choice[0]), read_checkpoint(Path(choice[0]), verify=False)

    def _resume(self) -> None:
        folder, state = self._load()
        if state is None:
            return
        if state.get("fingerprint") != self.fingerprint or state.get("format") != CHECKPOINT_FORMAT:
            if self.s.world_size > 1:
                dist.barrier()  # every process has read it before it goes
            if self.s.rank == 0:
                remove_checkpoints(self.checkpoint_dir)
                print(f"warning: {folder} was written under a different configuration or by an older version "
                      "of the loop; removed this run's checkpoints and starting it from scratch", file=sys.stderr)
            return
        saved_ranks = len(state["samplers"])
        if saved_ranks != self.s.world_size:
            # The data of every step is the same for any number of processes; only the dropout
            # masks (per-rank RNG) cannot continue as they would have.
            print(f"note: {folder} was written by {saved_ranks} process(es), this run has "
                  f"{self.s.world_size}; the batches continue unchanged, and each rank takes rank "
                  f"{min(self.s.rank, saved_ranks - 1)}'s RNG state (dropout masks differ from an uninterrupted run "
                  f"if dropout > 0)", file=sys.stderr)
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state["strategy"])
        local = state["samplers"][min(self.s.rank, saved_ranks - 1)]
        for provider in self.providers:
            provider.load_state_dict(local["providers"][provider.name])
        self._set_rng_state(local)
        self.step, self.tokens_seen, self.elapsed = state["step"], state["tokens_seen"], state["elapsed"]
        self.heldout_seconds = state["heldout_seconds"]
        self.passes.token_passes.update(state.get("token_passes", {}))
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        print(f"resumed from {folder} at step {self.step}", file=sys.stderr)

