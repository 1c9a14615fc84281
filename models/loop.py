"""The one training loop every strategy runs through.

The loop samples each step's sequences with the strategy's current weights, trains the
model on them (AdamW, warmup + cosine decay, clipping, gradient accumulation, DDP when
launched by torchrun), hands the step's per-domain signals to the strategy, and validates
whatever weights come back. It knows nothing about any particular strategy or signal: each
optional signal a strategy declares is computed by its provider (models/signals/), at the steps
the strategy wants it, in an order where a provider runs after the signals it uses. One kind of
provider computes the step's gradient itself (per-domain gradients); otherwise the loop makes
the forward and backward passes, in the orders models/step.py describes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from corpus.sampler import DomainSampler
from mixbench.errors import ConfigError, TrainingError
from models.flat_params import unwrap
from models.gpt2 import count_parameters
from models.throughput import mfu, model_flops_per_token
from models.optim import LoopSettings, make_optimizer, make_scheduler  # noqa: F401 (LoopSettings: the public API)
from models.loop_state import CheckpointParts, Checkpoints, LoopState, rng_state, set_rng_state
from models.heldout import HeldOutEvaluator, HeldOutSet, eval_steps
from models.runlog import RunLogs
from models.signals import providers_for
from models.signals.base import ProviderHandles, SignalSources, StepContext
from models.loop_sync import PendingStep, StopAgreement, StopRequested
from models.step import Batch, PendingHostCopy, StepPasses, to_device, values_to_host
from strategies.base import StepStats, Strategy, validate_weights

class TrainingLoop:
    def __init__(self, *, model, strategy: Strategy, sampler: DomainSampler, settings: LoopSettings,
                 log_path, checkpoint_dir, strategy_name: str, fingerprint: str = "", inputs: dict | None = None,
                 sources: SignalSources | None = None, heldout: HeldOutSet | None = None):
        self.model, self.strategy, self.sampler, self.settings = model, strategy, sampler, settings
        self.name = strategy_name
        self.domains = sampler.domains
        self.num_domains = len(self.domains)
        self.raw_model = unwrap(model)  # names, state dicts, functional calls
        forward_model = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
        self.num_parameters = count_parameters(self.raw_model)  # the vocabulary's padding excluded
        self.passes = StepPasses(model=model, seq_len=settings.seq_len, num_domains=self.num_domains, device=settings.device,
                                 bf16=settings.bf16, world_size=settings.world_size,
                                 num_parameters=self.num_parameters)
        config = self.raw_model.config
        self.flops_per_token = model_flops_per_token(self.num_parameters, config.n_layer, config.n_embd,
                                                     settings.seq_len)
        # The loop's progress (step, tokens, seconds, mixture): what its checkpoints save beside its parts.
        self.state = LoopState(weights=validate_weights(strategy.initial_weights(), self.num_domains, strategy_name, 0))
        self.initial_weights = self.state.weights.copy()  # weights.json's: what the first step sampled
        self._check_batch()
        # One provider per optional signal, in an order where each runs after those it uses.
        handles = ProviderHandles(model=forward_model, raw_model=self.raw_model, passes=self.passes,
                                  settings=settings, domains=tuple(self.domains), sources=sources or SignalSources())
        self.providers = providers_for(strategy, handles)
        self.optimizer = make_optimizer(self.raw_model, settings)
        self.scheduler = make_scheduler(self.optimizer, settings)
        self.waiting: PendingStep | None = None  # the last step's log row, until its losses are on the host
        self.step_loss_weights: np.ndarray | None = None  # what the current step's loss was weighted by
        parts = CheckpointParts(model=self.raw_model, optimizer=self.optimizer, scheduler=self.scheduler,
                                strategy=strategy, providers=self.providers, token_passes=self.passes.token_passes)
        self.checkpoints = Checkpoints(folder=checkpoint_dir, fingerprint=fingerprint, inputs=inputs,
                                       settings=settings, parts=parts)
        self.checkpoints.resume(self.state)
        # The held-out loss of the model as the loop trains it (dropout off), every eval_every steps.
        self.forward_model = forward_model
        self.heldout = None if heldout is None else HeldOutEvaluator(
            heldout, passes=self.passes, micro_batch_size=settings.micro_batch_size, rank=settings.rank,
            world_size=settings.world_size)
        self.eval_every = eval_steps(settings.steps, settings.eval_every)
        self.logs = RunLogs(Path(log_path), domains=self.domains, step=self.state.step, settings=settings,
                            loss_weights=strategy.has_loss_weights(), heldout=self.heldout is not None)

    def _check_batch(self) -> None:
        """A stratified batch must hold every domain it samples from."""
        support = int((self.state.weights > 0).sum())
        if self.strategy.stratified_batches() and self.settings.batch_size < support:
            raise ConfigError(f"strategy {self.name!r} samples every domain at every step: the batch needs at "
                              f"least {support} sequences, but batch_size is {self.settings.batch_size}")

    # -- one optimizer step ------------------------------------------------------------------
    def _loss_weights(self) -> np.ndarray | None:
        """The strategy's loss weights for this step, kept for the step's log row."""
        weights = self.strategy.loss_weights()
        if weights is not None:
            weights = validate_weights(weights, self.num_domains, self.name, self.state.step + 1, what="loss weights",
                                       on_simplex=False)
        self.step_loss_weights = weights
        return weights

    def _batch(self) -> Batch:
        """This rank's rows of the next global step (the same draw on every rank: corpus/sampler.py)."""
        s = self.settings
        rows = self.sampler.step_batch(self.state.weights, s.batch_size, self.state.step + 1,
                                       stratified=self.strategy.stratified_batches(),
                                       rank=s.rank, world_size=s.world_size)
        local_batch = len(rows.domains)
        micro = [slice(i, i + s.micro_batch_size) for i in range(0, local_batch, s.micro_batch_size)]
        return Batch(to_device(rows.tokens, s.device), to_device(rows.domains, s.device), rows.domains, micro,
                     global_domain_ids=rows.global_domains)

    def _row_weights(self, batch: Batch):
        row_w, denom = self.passes.row_weights(self._loss_weights(), batch)
        if denom <= 0:
            raise TrainingError(f"strategy {self.name!r} at step {self.state.step + 1}: loss weights are zero on "
                                "every domain of the batch")
        return row_w, denom

    def _backward_all(self, batch: Batch) -> list[torch.Tensor]:
        row_w, denom = self._row_weights(batch)
        return [self.passes.train_micro(batch, i, row_w, denom) for i in range(len(batch.micro))]

    def _signals(self, providers, context: StepContext) -> dict:
        """The signals due at this step, computed in dependency order."""
        return {p.name: p.compute(context) for p in providers}

    def _domain_loss(self, loss_sum: np.ndarray, token_count: np.ndarray, step: int) -> np.ndarray:
        with np.errstate(invalid="ignore", divide="ignore"):
            domain_loss = np.where(token_count > 0, loss_sum / token_count, np.nan)
        present = token_count > 0
        if not np.all(np.isfinite(domain_loss[present])):
            bad = [self.domains[j] for j in np.flatnonzero(present & ~np.isfinite(domain_loss))]
            raise TrainingError(f"strategy {self.name!r}: non-finite loss at step {step} on domain(s) {bad}")
        return domain_loss

    def _update(self, stats: StepStats) -> None:
        self.strategy.record(self.state.weights)
        new = self.strategy.update(stats)
        if new is not None:
            self.state.weights = validate_weights(new, self.num_domains, self.name, stats.step)

    def _optimizer_step(self, clip: bool) -> None:
        if clip and self.settings.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.settings.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def train_step(self, lr: float, batch: Batch | None = None) -> PendingStep:
        """Forward/backward on the step's batch (sampled now unless prefetched), hand the signals to
        the strategy when it needs them, take the optimizer step. A step whose stats nobody needs
        at once waits for nothing: its per-domain sums come to the host later (``PendingStep``)."""
        batch = self._batch() if batch is None else batch
        context = StepContext(step=self.state.step + 1, lr=lr, batch=batch)
        due = [p for p in self.providers if self.strategy.signal_due(p.name, context.step)]
        now = bool(due) or self.strategy.needs_step_stats(context.step)
        owner = next((p for p in due if p.computes_step_gradient), None)
        counts = self.passes.domain_counts(batch)
        if owner is not None:
            # The provider's passes are the step's: it makes the gradient from what the strategy returns.
            pending = self._stats(context, owner.forward_backward(context), counts, due)
            owner.apply_gradient(self._loss_weights())
            self._optimizer_step(clip=False)  # its pieces are already clipped by the strategy's rule
            return pending
        if not self.strategy.reweights_current_step():
            context.token_loss = torch.cat(self._backward_all(batch))
            loss_sum = self.passes.domain_sums(context.token_loss, batch)
            pending = self._stats(context, loss_sum, counts, due) if now else self._later(context, loss_sum, counts)
        elif self.settings.reweighted_step == "one_forward":
            # The step's loss uses the weights its own signals produce: keep every micro-batch's
            # graph until then, and backpropagate the same forward.
            graphs = self.passes.forward_only(batch, keep_graph=True)
            context.token_loss = torch.cat([g.detach() for g in graphs])
            pending = self._stats(context, self.passes.domain_sums(context.token_loss, batch), counts, due)
            self.passes.backward_kept(batch, graphs, *self._row_weights(batch))
        else:
            # A no-grad pass for the signals, then each micro-batch again: replay the RNG so the
            # second forward draws the dropout masks of the first.
            rng = rng_state(self.settings.device)
            context.token_loss = torch.cat(self.passes.forward_only(batch, keep_graph=False))
            pending = self._stats(context, self.passes.domain_sums(context.token_loss, batch), counts, due)
            set_rng_state(rng, self.settings.device)
            self._backward_all(batch)
        self._optimizer_step(clip=True)
        return pending

    def _stats(self, context: StepContext, loss_sum: torch.Tensor, token_count: np.ndarray, due) -> PendingStep:
        """The step's signals and loss sums in one transfer to the host, then the strategy's update."""
        used = self.state.weights
        signals = self._signals(due, context)
        host = values_to_host({"loss_sum": loss_sum, "signals": signals})
        stats = StepStats(context.step, context.lr, self._domain_loss(host["loss_sum"], token_count, context.step),
                          token_count, host["signals"])
        self._update(stats)
        return PendingStep(context.step, context.lr, used, token_count, self.strategy.trace(),
                           loss_sum=host["loss_sum"])

    def _later(self, context: StepContext, loss_sum: torch.Tensor, token_count: np.ndarray) -> PendingStep:
        """A step the strategy does not update on: its loss sums go to the host behind its work."""
        self.strategy.record(self.state.weights)
        return PendingStep(context.step, context.lr, self.state.weights, token_count, self.strategy.trace(),
                           copy=PendingHostCopy({"loss_sum": loss_sum}))

    def mfu(self, tokens_per_s: float) -> float | None:
        """Model FLOPs utilisation of every device of the run at this rate (models/throughput.py)."""
        return mfu(tokens_per_s, self.flops_per_token, self.settings.peak_tflops, self.settings.world_size)

    def measure_heldout(self) -> np.ndarray:
        """The held-out loss per domain now, logged with the step, tokens and FLOPs so far (every
        process takes part; the first writes)."""
        started = time.perf_counter()
        domain_loss = self.heldout.domain_loss(self.forward_model)
        seconds = time.perf_counter() - started
        self.state.heldout_seconds += seconds
        if self.settings.rank == 0:
            flops = self.passes.flops() * self.settings.world_size  # every process makes the same passes
            state = self.state
            self.logs.heldout.write(state.step, state.tokens_seen, flops, state.elapsed, seconds, domain_loss)
            if self.logs.tensorboard:
                self.logs.tensorboard.write_heldout(self.state.step, domain_loss)
        return domain_loss

    def _log(self, row: PendingStep) -> None:
        """Check a finished step's losses and write its log row (rank 0)."""
        domain_loss = self._domain_loss(row.domain_loss_sum(), row.token_count, row.step)
        loss = float(np.nansum(domain_loss * row.token_count) / row.token_count.sum())
        if self.settings.rank != 0:
            return
        tokens_per_s = float(row.token_count.sum()) / row.step_time
        self.logs.steps.write(row.step, row.lr, loss, row.tokens_seen, row.elapsed, row.step_time, tokens_per_s,
                       self.mfu(tokens_per_s), domain_loss, row.token_count, row.weights, row.loss_weights)
        if self.logs.tensorboard:
            self.logs.tensorboard.write_step(row.step, lr=row.lr, loss=loss, tokens_per_s=tokens_per_s,
                                        domain_loss=domain_loss, weights=row.weights)
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{loss:.3f}")
        if self.bar.disable and (row.step % self.report_every == 0 or row.step == self.settings.steps):
            print(f"{self.name} step {row.step}/{self.settings.steps} loss {loss:.4f} lr {row.lr:.2e} "
                  f"{row.step_time:.3f}s/step", file=sys.stderr, flush=True)

    def skip_to(self, step: int) -> None:
        """Let ``step`` come next without training those before it (a benchmark times each kind of step)."""
        self.state.step = step - 1

    def drain(self) -> None:
        """Write the log row still waiting for its step's losses (before a checkpoint, and at the end)."""
        if self.waiting is not None:
            row, self.waiting = self.waiting, None
            self._log(row)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, stop_after: int | None = None) -> bool:
        """Train to ``steps``; return False if stopped early (checkpoint saved), True when done.

        Step t is queued, then step t+1's batch is sampled and its copy to the device started
        (its weights are known: the strategy has updated, or does not update on t), and only then
        does the host wait, for step t−1's losses, to write t−1's log row: the device always has
        a step queued."""
        stop, agree = StopRequested(), StopAgreement(self.settings.device, self.settings.world_size)
        self.model.train()
        self.bar = tqdm(total=self.settings.steps, initial=self.state.step, desc=self.name, unit="step",
                        disable=self.settings.rank != 0 or not sys.stderr.isatty())
        self.report_every = max(1, self.settings.steps // 20)
        if self.heldout is not None and self.state.step == 0 and self.strategy.heldout_before_training():
            self.measure_heldout()  # where the run starts: a later stage reads it (a resumed run has it)
        batch = self._batch() if self.state.step < self.settings.steps else None
        interrupted = False
        while self.state.step < self.settings.steps and not interrupted:
            started = time.perf_counter()
            row = self.train_step(self.scheduler.get_last_lr()[0], batch)
            row.loss_weights = self.step_loss_weights  # every step's passes ask for them once
            self.state.step += 1
            self.state.tokens_seen += int(row.token_count.sum())
            done = self.state.step == self.settings.steps  # the final model is saved instead of a checkpoint
            batch = None if done else self._batch()  # prefetched while the device trains
            if self.settings.rank == 0:
                self.logs.trace.write(self.state.step, row.trace)
            self.drain()  # the previous step's row
            row.step_time = time.perf_counter() - started
            self.state.elapsed += row.step_time
            row.elapsed, row.tokens_seen, self.waiting = self.state.elapsed, self.state.tokens_seen, row
            if self.heldout is not None and (self.state.step % self.eval_every == 0 or done):
                self.measure_heldout()
            if self.settings.rank == 0 and self.logs.flushes.due():
                # The rows written so far; this step's waits for its losses (no wait for the device
                # here: a checkpoint, which a resume starts from, writes it first).
                for log in self.logs.open():
                    log.flush()
            interrupted = agree(stop.requested) or (stop_after is not None and self.state.step >= stop_after)
            if not done and (interrupted or self.state.step % self.settings.checkpoint_every == 0):
                self.drain()  # the log row of the step being saved, checked for NaN first
                self.checkpoints.save(self.state, self.logs.open())
        self.drain()
        agree.close()
        self.bar.close()
        for log in self.logs.open():
            log.close()
        return self.state.step == self.settings.steps
