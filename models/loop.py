"""The one training loop every strategy runs through.

The loop samples each step's sequences with the strategy's current weights, trains the
model on them (AdamW, warmup + cosine decay, clipping, gradient accumulation, DDP when
launched by torchrun), hands the step's per-domain signals to the strategy, and validates
whatever weights come back. It knows nothing about any particular strategy.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from tqdm import tqdm

from corpus.sampler import DomainSampler
from mixbench.errors import TrainingError
from models.checkpoint import load_checkpoint, save_checkpoint
from models.runlog import StepLog
from strategies.base import StepStats, Strategy, validate_weights


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
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    bf16: bool = False
    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_config(cls, training: dict, steps: int, **runtime) -> "LoopSettings":
        """Settings from the config's ``training`` section; ``runtime`` sets device, bf16, rank, world_size."""
        runtime_fields = ("steps", "device", "bf16", "rank", "world_size")
        names = [f for f in cls.__dataclass_fields__ if f in training and f not in runtime_fields]
        return cls(steps=steps, **{name: training[name] for name in names}, **runtime)


def lr_factor(step: int, warmup: int, total: int, min_ratio: float) -> float:
    """Linear warmup to 1, then cosine decay to ``min_ratio`` at ``total`` (step is 0-based)."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, s: LoopSettings) -> torch.optim.Optimizer:
    """AdamW; no weight decay on biases and LayerNorm gains (nanoGPT's grouping)."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=s.lr, betas=(s.beta1, s.beta2), fused=s.device.type == "cuda")


class StopRequested:
    """SIGINT/SIGTERM ask the loop to checkpoint at the end of the current step and exit."""

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True


class TrainingLoop:
    def __init__(self, model, strategy: Strategy, sampler: DomainSampler, settings: LoopSettings,
                 log_path, checkpoint_path, strategy_name: str, fingerprint: str = ""):
        self.model, self.strategy, self.sampler, self.s = model, strategy, sampler, settings
        self.name = strategy_name
        self.domains = sampler.domains
        self.k = len(self.domains)
        self.raw_model = model.module if hasattr(model, "module") else model
        self.optimizer = make_optimizer(self.raw_model, settings)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda i: lr_factor(i, settings.warmup_steps, settings.steps, settings.min_lr_ratio)
        )
        self.checkpoint_path = checkpoint_path
        self.fingerprint = fingerprint  # of the config the run belongs to: a stale checkpoint is not resumed
        self.step, self.tokens_seen, self.elapsed = 0, 0, 0.0
        self.weights = validate_weights(strategy.initial_weights(), self.k, strategy_name, 0)
        self._resume()
        self.log = StepLog(log_path, self.domains, self.step) if settings.rank == 0 else None

    # -- checkpointing -------------------------------------------------------------------
    def _state(self) -> dict:
        samplers = [self.sampler.state_dict()]
        if self.s.world_size > 1:
            samplers = [None] * self.s.world_size
            dist.all_gather_object(samplers, self.sampler.state_dict())
        return {
            "fingerprint": self.fingerprint, "step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
            "weights": self.weights, "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(), "samplers": samplers,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
        }

    def save(self) -> None:
        state = self._state()
        if self.s.rank == 0:
            self.log.flush()
            save_checkpoint(self.checkpoint_path, state)

    def _resume(self) -> None:
        state = load_checkpoint(self.checkpoint_path)
        if state is None:
            return
        if state.get("fingerprint") != self.fingerprint:
            print(f"warning: {self.checkpoint_path} was written under a different configuration; "
                  "starting this run from scratch", file=sys.stderr)
            return
        if len(state["samplers"]) != self.s.world_size:
            raise TrainingError(
                f"checkpoint {self.checkpoint_path} was written by {len(state['samplers'])} processes, "
                f"this run has {self.s.world_size}; resume with the same number of processes"
            )
        self.raw_model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.strategy.load_state_dict(state["strategy"])
        self.sampler.load_state_dict(state["samplers"][self.s.rank])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step, self.tokens_seen, self.elapsed = state["step"], state["tokens_seen"], state["elapsed"]
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        print(f"resumed from {self.checkpoint_path} at step {self.step}", file=sys.stderr)

    # -- one optimizer step ------------------------------------------------------------------
    def _all_reduce(self, *tensors: torch.Tensor) -> None:
        if self.s.world_size > 1:
            for t in tensors:
                dist.all_reduce(t)

    def train_step(self) -> tuple[float, np.ndarray, np.ndarray]:
        s, dev = self.s, self.s.device
        local_batch = s.batch_size // s.world_size
        tokens, domain_ids = self.sampler.sample(self.weights, local_batch)
        loss_weights = self.strategy.loss_weights()
        if loss_weights is not None:
            loss_weights = validate_weights(loss_weights, self.k, self.name, self.step + 1, what="loss weights",
                                            on_simplex=False)
        row_w = np.ones(local_batch) if loss_weights is None else loss_weights[domain_ids]
        tokens, domains = torch.from_numpy(tokens).to(dev), torch.from_numpy(domain_ids).to(dev)
        row_w = torch.as_tensor(row_w, dtype=torch.float32, device=dev)
        # Token-weighted mean over every token of the step on every rank.
        denom = row_w.sum() * s.seq_len
        self._all_reduce(denom)
        if denom.item() <= 0:
            raise TrainingError(f"strategy {self.name!r} at step {self.step + 1}: loss weights are zero on every "
                                "domain of the batch")
        loss_sum = torch.zeros(self.k, device=dev, dtype=torch.float64)
        token_count = torch.zeros(self.k, device=dev, dtype=torch.float64)
        micro_batches = range(0, local_batch, s.micro_batch_size)
        for i, start in enumerate(micro_batches):
            rows = slice(start, start + s.micro_batch_size)
            x, y, d = tokens[rows, :-1], tokens[rows, 1:], domains[rows]
            last = i == len(micro_batches) - 1
            sync = self.model.no_sync() if (s.world_size > 1 and not last) else nullcontext()
            with sync, torch.autocast(dev.type, dtype=torch.bfloat16, enabled=s.bf16):
                logits = self.model(input_ids=x).logits
                token_loss = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="none")
                row_loss = token_loss.view(x.shape).sum(dim=1)
                # DDP averages gradients over ranks; scale so the result is the global weighted mean.
                ((row_loss * row_w[rows]).sum() * s.world_size / denom).backward()
            loss_sum.index_add_(0, d, row_loss.detach().double())
            token_count.index_add_(0, d, torch.full_like(row_loss, s.seq_len, dtype=torch.float64))
        self._all_reduce(loss_sum, token_count)
        loss_sum, token_count = loss_sum.cpu().numpy(), token_count.cpu().numpy()
        with np.errstate(invalid="ignore", divide="ignore"):
            domain_loss = np.where(token_count > 0, loss_sum / token_count, np.nan)
        present = token_count > 0
        if not np.all(np.isfinite(domain_loss[present])):
            bad = [self.domains[j] for j in np.flatnonzero(present & ~np.isfinite(domain_loss))]
            raise TrainingError(f"strategy {self.name!r}: non-finite loss at step {self.step + 1} on domain(s) {bad}")
        if s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), s.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss_sum.sum() / token_count.sum()), domain_loss, token_count

    def _agree(self, flag: bool) -> bool:
        """True on every rank if it is True on any: all ranks must checkpoint and stop together."""
        if self.s.world_size == 1:
            return flag
        t = torch.tensor([float(flag)], device=self.s.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> bool:
        """Train to ``steps``; return False if stopped early (checkpoint saved), True when done."""
        stop = StopRequested()
        self.model.train()
        bar = tqdm(total=self.s.steps, initial=self.step, desc=self.name, unit="step",
                   disable=self.s.rank != 0 or not sys.stderr.isatty())
        report_every = max(1, self.s.steps // 20)
        while self.step < self.s.steps:
            started = time.perf_counter()
            lr = self.scheduler.get_last_lr()[0]
            loss, domain_loss, token_count = self.train_step()
            self.step += 1
            self.tokens_seen += int(token_count.sum())
            used = self.weights
            self.strategy.record(used)
            new = self.strategy.update(StepStats(self.step, lr, domain_loss, token_count))
            if new is not None:
                self.weights = validate_weights(new, self.k, self.name, self.step)
            step_time = time.perf_counter() - started
            self.elapsed += step_time
            if self.s.rank == 0:
                self.log.write(self.step, lr, loss, self.tokens_seen, self.elapsed, step_time,
                               domain_loss, token_count, used)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.3f}")
                if bar.disable and (self.step % report_every == 0 or self.step == self.s.steps):
                    print(f"{self.name} step {self.step}/{self.s.steps} loss {loss:.4f} lr {lr:.2e} "
                          f"{step_time:.3f}s/step", file=sys.stderr, flush=True)
            interrupted = self._agree(stop.requested or (stop_after is not None and self.step >= stop_after))
            done = self.step == self.s.steps  # the final model is saved instead of a checkpoint
            if not done and (interrupted or self.step % self.s.checkpoint_every == 0):
                self.save()
            if interrupted and not done:
                bar.close()
                return False
        bar.close()
        if self.log:
            self.log.close()
        return True
