"""The one training loop every strategy runs through.

The loop samples each step's sequences with the strategy's current weights, trains the
model on them (AdamW, warmup + cosine decay, clipping, gradient accumulation, DDP when
launched by torchrun), hands the step's per-domain signals to the strategy, and validates
whatever weights come back. It knows nothing about any particular strategy.
"""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm import tqdm

from corpus.sampler import DomainSampler
from mixbench.errors import TrainingError
from models.checkpoint import load_checkpoint, save_checkpoint
from models.probe import GradientProbe
from models.optim import LoopSettings, lr_factor, make_optimizer  # noqa: F401 (LoopSettings: the public API)
from models.domain_grads import DomainGradients
from models.runlog import StepLog, TraceLog
from models.step import Batch, StepPasses
from strategies.base import StepStats, Strategy, validate_weights


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
                 log_path, checkpoint_path, strategy_name: str, fingerprint: str = "", reference_model=None,
                 target_sampler: DomainSampler | None = None,
                 probe_samplers: tuple[DomainSampler, DomainSampler] | None = None, seed: int = 0):
        self.model, self.strategy, self.sampler, self.s = model, strategy, sampler, settings
        self.name = strategy_name
        self.domains = sampler.domains
        self.k = len(self.domains)
        self.raw_model = model.module if hasattr(model, "module") else model
        self.passes = StepPasses(model, settings.seq_len, self.k, settings.device, settings.bf16, settings.world_size,
                                 reference_model)
        self.domain_grads = None
        if "domain_gradients" in strategy.required_signals():
            # The unwrapped model: gradients are all-reduced per domain here, not by DDP.
            self.domain_grads = DomainGradients(self.raw_model, self.passes,
                                                strategy.domain_gradient_options()["score_params"])
        self.target_sampler = target_sampler
        self.probe = None
        if "example_gradient_features" in strategy.required_signals():
            options = strategy.probe_options()
            self.probe = GradientProbe(self.raw_model, options["params"], options["sketch_dim"], seed, settings.device)
            self.probe_sampler, target_source = probe_samplers
            per_domain, per_target = strategy.probe_sizes()
            self.probe_rows = np.repeat(np.arange(self.k), per_domain)
            # The target batch is drawn once, from a fresh stream: the same after a resume.
            target_rows = np.repeat(np.arange(self.k), per_target)
            self.probe_target = torch.from_numpy(target_source.windows(target_rows))
            self.probe_dir = Path(log_path).parent / "probes"
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
        self.trace = TraceLog(Path(log_path).with_name("trace.jsonl"), self.step) if settings.rank == 0 else None

    # -- checkpointing -------------------------------------------------------------------
    def _rng_state(self) -> dict:
        return {"torch_rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(self.s.device) if self.s.device.type == "cuda" else None}

    def _set_rng_state(self, state: dict) -> None:
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and self.s.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.s.device)

    def _state(self) -> dict:
        # Per rank: each rank has its own sampler streams and dropout RNG.
        local = {"train": self.sampler.state_dict(),
                 "target": self.target_sampler.state_dict() if self.target_sampler else None,
                 "probe": self.probe_sampler.state_dict() if self.probe else None,
                 **self._rng_state()}
        samplers = [local]
        if self.s.world_size > 1:
            samplers = [None] * self.s.world_size
            dist.all_gather_object(samplers, local)
        return {
            "fingerprint": self.fingerprint, "step": self.step, "tokens_seen": self.tokens_seen, "elapsed": self.elapsed,
            "token_passes": dict(self.passes.token_passes),
            "weights": self.weights, "model": self.raw_model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "strategy": self.strategy.state_dict(), "samplers": samplers,
        }

    def save(self) -> None:
        state = self._state()
        if self.s.rank == 0:
            self.log.flush()
            self.trace.flush()
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
        local = state["samplers"][self.s.rank]
        self.sampler.load_state_dict(local["train"])
        if self.target_sampler is not None:
            self.target_sampler.load_state_dict(local["target"])
        if self.probe is not None:
            self.probe_sampler.load_state_dict(local["probe"])
        self._set_rng_state(local)
        self.step, self.tokens_seen, self.elapsed = state["step"], state["tokens_seen"], state["elapsed"]
        self.passes.token_passes.update(state.get("token_passes", {}))
        self.weights = np.asarray(state["weights"], dtype=np.float64)
        print(f"resumed from {self.checkpoint_path} at step {self.step}", file=sys.stderr)

    # -- one optimizer step ------------------------------------------------------------------
    def _loss_weights(self) -> np.ndarray | None:
        weights = self.strategy.loss_weights()
        if weights is None:
            return None
        return validate_weights(weights, self.k, self.name, self.step + 1, what="loss weights", on_simplex=False)

    def _batch(self) -> Batch:
        s = self.s
        local_batch = s.batch_size // s.world_size
        tokens, domain_ids = self.sampler.sample(self.weights, local_batch)
        micro = [slice(i, i + s.micro_batch_size) for i in range(0, local_batch, s.micro_batch_size)]
        return Batch(torch.from_numpy(tokens).to(s.device), torch.from_numpy(domain_ids).to(s.device), domain_ids, micro)

    def _backward_all(self, batch: Batch, graphs: list | None = None) -> list[torch.Tensor]:
        row_w, denom = self.passes.row_weights(self._loss_weights(), batch)
        if denom.item() <= 0:
            raise TrainingError(f"strategy {self.name!r} at step {self.step + 1}: loss weights are zero on every "
                                "domain of the batch")
        return [self.passes.train_micro(batch, i, row_w, denom, graphs[i] if graphs else None)
                for i in range(len(batch.micro))]

    def _signals(self, batch: Batch, token_loss: torch.Tensor) -> dict:
        """The optional signals this strategy declared, gathered over ranks."""
        extra = {}
        if "reference_token_loss" in self.strategy.required_signals():
            extra["token_loss"] = self.passes.gather(token_loss.float())
            extra["reference_token_loss"] = self.passes.gather(self.passes.reference_token_loss(batch).float())
            extra["token_domains"] = self.passes.gather(batch.domains)
        if self.probe is not None and self.strategy.probe_due(self.step + 1):
            extra["example_gradient_features"] = self._probe(self.step + 1)
        return extra

    def _probe(self, step: int) -> dict:
        """Sketched per-example gradients of m train sequences per domain and the fixed target
        batch; saved to probes/ (for the gradient-direction figures) and handed to the strategy."""
        tokens = torch.from_numpy(self.probe_sampler.windows(self.probe_rows))
        features = self.probe.features(tokens)
        target = self.probe.features(self.probe_target)
        probed = (len(tokens) + len(self.probe_target)) * self.s.seq_len  # one forward + backward per sequence
        self.passes.count("forward", probed)
        self.passes.count("backward", probed)
        if self.s.rank == 0:
            from mixbench.io import atomic_path

            with atomic_path(self.probe_dir / f"step{step:06d}.npz") as tmp, open(tmp, "wb") as f:
                np.savez_compressed(f, features=features.astype(np.float32), domains=self.probe_rows,
                                    target=target.astype(np.float32), domain_names=np.array(self.domains))
        return {"domains": [features[self.probe_rows == i] for i in range(self.k)], "target": target}

    def _domain_loss(self, loss_sum: np.ndarray, token_count: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            domain_loss = np.where(token_count > 0, loss_sum / token_count, np.nan)
        present = token_count > 0
        if not np.all(np.isfinite(domain_loss[present])):
            bad = [self.domains[j] for j in np.flatnonzero(present & ~np.isfinite(domain_loss))]
            raise TrainingError(f"strategy {self.name!r}: non-finite loss at step {self.step + 1} on domain(s) {bad}")
        return domain_loss

    def _update(self, stats: StepStats) -> None:
        self.strategy.record(self.weights)
        new = self.strategy.update(stats)
        if new is not None:
            self.weights = validate_weights(new, self.k, self.name, stats.step)

    def _optimizer_step(self, clip: bool) -> None:
        if clip and self.s.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.s.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def _domain_gradient_step(self, lr: float) -> StepStats:
        """Per-domain gradients in, combination weights out: the model steps on Σ_i w_i g_i.
        Each g_i is already clipped by the strategy's rule, so the global clip is not applied."""
        batch = self._batch()
        options = self.strategy.domain_gradient_options()
        grads, norms, loss_sum, token_count = self.domain_grads.domain_gradients(batch, self.k, options["clip_norm"])
        mask = self.domain_grads.score_mask
        extra = {"domain_gradients": {i: g[mask].cpu().numpy() for i, g in grads.items()}, "gradient_norms": norms}
        if "target_gradient" in self.strategy.required_signals() and self.target_sampler is not None:
            _, target_weights = self.strategy.target_batch()
            tokens, _ = self.target_sampler.sample(target_weights, len(batch.domain_ids))
            target = self.domain_grads.target_gradient(torch.from_numpy(tokens).to(self.s.device))
            extra["target_gradient"] = target[mask].cpu().numpy()
        stats = StepStats(self.step + 1, lr, self._domain_loss(loss_sum, token_count), token_count, extra)
        self._update(stats)
        self.domain_grads.apply(grads, self._loss_weights())
        self._optimizer_step(clip=False)
        return stats

    def train_step(self, lr: float) -> StepStats:
        """Sample, forward/backward, hand the signals to the strategy, take the optimizer step."""
        if self.domain_grads is not None:
            return self._domain_gradient_step(lr)
        batch = self._batch()
        same_step = self.strategy.reweights_current_step()
        if same_step:
            # With several micro-batches the trained forward is a second pass: replay the RNG so
            # it draws the same dropout masks as the pass the signals came from.
            rng = self._rng_state()
            graphs = self.passes.forward_only(batch, keep_graph=len(batch.micro) == 1)
            token_loss = torch.cat([g.detach() for g in graphs])
        else:
            token_loss = torch.cat(self._backward_all(batch))
        loss_sum, token_count = self.passes.domain_sums(token_loss, batch)
        stats = StepStats(self.step + 1, lr, self._domain_loss(loss_sum, token_count), token_count,
                          self._signals(batch, token_loss))
        self._update(stats)
        if same_step:
            if len(batch.micro) > 1:
                self._set_rng_state(rng)
            self._backward_all(batch, graphs if len(batch.micro) == 1 else None)
        self._optimizer_step(clip=True)
        return stats

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
            used = self.weights
            stats = self.train_step(lr)
            self.step += 1
            self.tokens_seen += int(stats.domain_tokens.sum())
            loss = float(np.nansum(stats.domain_loss * stats.domain_tokens) / stats.domain_tokens.sum())
            step_time = time.perf_counter() - started
            self.elapsed += step_time
            if self.s.rank == 0:
                self.log.write(self.step, lr, loss, self.tokens_seen, self.elapsed, step_time,
                               stats.domain_loss, stats.domain_tokens, used)
                self.trace.write(self.step, self.strategy.trace())
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
            self.trace.close()
        return True
