"""A run's logs, safe to resume: log.csv (one row per optimizer step), val.csv (the held-out
loss at each measured step) and trace.jsonl (what the strategy traces).

log.csv's columns: step, lr, loss, tokens (cumulative), elapsed_s, step_s, tokens_per_s, mfu (model FLOPs
utilisation, empty without a known peak: models/throughput.py), then per domain ``loss/<d>``,
``tokens/<d>`` and ``weight/<d>`` (the sampling weights the step used), and for a strategy whose
training objective is weighted (``Strategy.has_loss_weights()``: DoReMi's and DoGE's proxies)
``loss_weight/<d>``, the per-domain weights of the step's loss (all 1 at a step that used the plain
token mean). The header follows from the strategy and stage alone, so a resumed run's log matches
an uninterrupted one.
"""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np

from mixbench.errors import DataError
from mixbench.io import atomic_path


class FlushPolicy:
    """When the logs go to disk between checkpoints: after ``every_steps`` steps or
    ``every_seconds`` seconds, whichever comes first, so that ``tail -f log.csv`` follows a run."""

    def __init__(self, every_steps: int, every_seconds: float, clock=time.monotonic):
        self.every_steps, self.every_seconds, self.clock = every_steps, every_seconds, clock
        self.steps, self.last = 0, clock()

    def due(self) -> bool:
        """Count one step; True (and start counting again) when a flush is due."""
        self.steps += 1
        if self.steps >= self.every_steps or self.clock() - self.last >= self.every_seconds:
            self.steps, self.last = 0, self.clock()
            return True
        return False


class CsvLog:
    """A CSV file with one row per step, appended to as a run goes and cut back to the
    checkpoint's step when it resumes."""

    def __init__(self, path: str | Path, columns: list[str], resume_step: int):
        self.path = Path(path)
        self.columns = columns
        self._truncate_after(resume_step)
        new = not self.path.exists()
        self.file = open(self.path, "a", newline="", encoding="utf-8")
        self.writer = csv.writer(self.file)
        if new:
            self.writer.writerow(self.columns)

    def _truncate_after(self, step: int) -> None:
        """Drop rows of steps after the checkpoint we resume from (they will be redone)."""
        if not self.path.exists():
            return
        if step == 0:
            self.path.unlink()
            return
        with open(self.path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
        if rows and rows[0] != self.columns:  # e.g. a log begun before loss_weight/<d> existed: keep every row
            lacks, extra = sorted(set(self.columns) - set(rows[0])), sorted(set(rows[0]) - set(self.columns))
            raise DataError(f"{self.path} lacks columns this run writes ({', '.join(lacks) or 'none'}) and has others "
                            f"({', '.join(extra) or 'none'}), so resuming would drop its rows; move it aside and "
                            f"retrain the run, or resume it with the version that began it")
        # A crash can leave a half-written last row: keep only complete rows up to the step.
        keep = [rows[0]] + [r for r in rows[1:] if len(r) == len(self.columns) and r[0].isdigit() and int(r[0]) <= step]
        with atomic_path(self.path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows(keep)

    def flush(self, sync: bool = False) -> None:
        """Called before each checkpoint (``sync``: to the disk, so that after a crash of the
        machine the log still covers every checkpointed step) and every few steps."""
        self.file.flush()
        if sync:
            os.fsync(self.file.fileno())

    def close(self) -> None:
        self.file.close()


def _losses(values: np.ndarray) -> list[str]:
    return ["" if np.isnan(x) else f"{x:.6f}" for x in values]


class StepLog(CsvLog):
    def __init__(self, path: str | Path, domains: list[str], resume_step: int, *, loss_weights: bool = False):
        self.loss_weights, self.num_domains = loss_weights, len(domains)
        kinds = ("loss", "tokens", "weight", *(("loss_weight",) if loss_weights else ()))
        columns = ["step", "lr", "loss", "tokens", "elapsed_s", "step_s", "tokens_per_s", "mfu"]
        columns += [f"{kind}/{d}" for kind in kinds for d in domains]
        super().__init__(path, columns, resume_step)

    def write(self, step: int, lr: float, loss: float, tokens: int, elapsed: float, step_time: float,
              tokens_per_s: float, mfu: float | None,
              domain_loss: np.ndarray, domain_tokens: np.ndarray, weights: np.ndarray,
              loss_weights: np.ndarray | None = None) -> None:
        row = [step, f"{lr:.6g}", f"{loss:.6f}", tokens, f"{elapsed:.3f}", f"{step_time:.4f}", f"{tokens_per_s:.1f}",
               "" if mfu is None else f"{mfu:.4f}"]
        row += _losses(domain_loss)
        row += [int(x) for x in domain_tokens]
        row += [f"{x:.8f}" for x in weights]
        if self.loss_weights:  # None: the step's loss was the plain token mean
            row += [f"{x:.8f}" for x in (np.ones(self.num_domains) if loss_weights is None else loss_weights)]
        self.writer.writerow(row)


class HeldOutLog(CsvLog):
    """``val.csv``: the held-out loss per domain (models/heldout.py) at each measured step, with
    the training tokens and FLOPs (every pass of every process, models/step.py) so far, and
    ``val_loss``, the macro average over domains. ``eval_s`` is the measurement's own time."""

    def __init__(self, path: str | Path, domains: list[str], resume_step: int):
        columns = ["step", "tokens", "flops", "elapsed_s", "eval_s", "val_loss", *(f"val_loss/{d}" for d in domains)]
        super().__init__(path, columns, resume_step)

    def write(self, step: int, tokens: int, flops: int, elapsed: float, eval_seconds: float,
              domain_loss: np.ndarray) -> None:
        self.writer.writerow([step, tokens, flops, f"{elapsed:.3f}", f"{eval_seconds:.4f}",
                              f"{float(np.mean(domain_loss)):.6f}", *_losses(domain_loss)])


class TraceLog:
    """``trace.jsonl``: one JSON record per step for which the strategy has something to trace
    (e.g. DoReMi's α and excess losses), resumable like the CSV log."""

    def __init__(self, path: str | Path, resume_step: int):
        self.path = Path(path)
        if self.path.exists():
            keep = []
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:  # half-written by a crash
                    continue
                if record["step"] <= resume_step:
                    keep.append(line + "\n")
            with atomic_path(self.path) as tmp:
                tmp.write_text("".join(keep), encoding="utf-8")
        self.file = None

    def write(self, step: int, record: dict | None) -> None:
        if record is None:
            return
        if self.file is None:
            self.file = open(self.path, "a", encoding="utf-8")
        self.file.write(json.dumps({"step": step, **record}, default=_to_list) + "\n")

    def flush(self, sync: bool = False) -> None:
        if self.file:
            self.file.flush()
            if sync:
                os.fsync(self.file.fileno())

    def close(self) -> None:
        if self.file:
            self.file.close()


def _to_list(value):
    return value.tolist() if hasattr(value, "tolist") else str(value)


class RunLogs:
    """A run's logs, opened on the first process only (the others write none): ``steps``
    (log.csv), ``trace`` (trace.jsonl), ``heldout`` (val.csv, with held-out measurements) and
    ``tensorboard`` (its events, when ``training.tensorboard``), each resumed at ``step``."""

    def __init__(self, log_path: Path, *, domains: list[str], step: int, settings, loss_weights: bool,
                 heldout: bool):
        self.steps = self.trace = self.heldout = self.tensorboard = None
        self.flushes = FlushPolicy(settings.log_flush_steps, settings.log_flush_seconds)
        if settings.rank != 0:
            return
        self.steps = StepLog(log_path, domains, step, loss_weights=loss_weights)
        self.trace = TraceLog(log_path.with_name("trace.jsonl"), step)
        if heldout:
            self.heldout = HeldOutLog(log_path.with_name("val.csv"), domains, step)
        if settings.tensorboard:
            from models.tensorboard_log import TensorBoardLog  # ~1 s of imports, only when asked for

            self.tensorboard = TensorBoardLog(log_path.parent, domains, step, settings.log_flush_seconds)

    def open(self) -> list:
        """The open logs (none on the other processes): what a checkpoint flushes and the end closes."""
        return [log for log in (self.steps, self.trace, self.heldout, self.tensorboard) if log is not None]
