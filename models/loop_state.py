"""The training loop's checkpoint: everything an interrupted run needs to go on exactly as if
it had not stopped (model, optimizer, scheduler, strategy, signal providers, RNG, counters), and
its resumption. A mixin of models/loop.py's TrainingLoop, whose attributes it reads."""

from __future__ import annotations

import sys

import numpy as np
import torch
import torch.distributed as dist

from models.checkpoint import load_checkpoint, save_checkpoint

# Bumped when the checkpoint's layout changes: an older checkpoint is not resumed.
CHECKPOINT_FORMAT = 4


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
        state = self._state()
        if self.s.rank == 0:
            for log in self._logs():
                log.flush()
            save_checkpoint(self.checkpoint_path, state)

    def _resume(self) -> None:
        state = load_checkpoint(self.checkpoint_path)
        if state is None:
            return
        if state.get("fingerprint") != self.fingerprint or state.get("format") != CHECKPOINT_FORMAT:
            print(f"warning: {self.checkpoint_path} was written under a different configuration or by an older "
                  "version of the loop; starting this run from scratch", file=sys.stderr)
            return
        saved_ranks = len(state["samplers"])
        if saved_ranks != self.s.world_size:
            # The data of every step is the same for any number of processes; only the dropout
            # masks (per-rank RNG) cannot continue as they would have.
            print(f"note: {self.checkpoint_path} was written by {saved_ranks} process(es), this run has "
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
        print(f"resumed from {self.checkpoint_path} at step {self.step}", file=sys.stderr)

