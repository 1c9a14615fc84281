"""TensorBoard event files beside each run's log.csv: ``tensorboard --logdir runs`` shows every
run as ``<size>/<strategy>/seed<n>/<stage>``.

Scalars: ``train/loss`` and ``train/loss/<domain>`` (the step's batch), ``val/loss`` (macro
average over domains) and ``val/loss/<domain>`` (models/heldout.py), ``weights/<domain>`` (the
sampling weights the step used), ``lr`` and ``tokens_per_s``. A resumed run purges the events
after its checkpoint, and a run started from scratch removes the event files of an earlier
attempt, so the curves show each step once. ``training.tensorboard: false`` turns
it off (and the import of tensorboard with it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


class TensorBoardLog:
    def __init__(self, run_dir: str | Path, domains: list[str], resume_step: int, flush_seconds: float):
        from torch.utils.tensorboard import SummaryWriter

        if resume_step == 0:  # a run started again from scratch: its earlier curves are not this run's
            for stale in Path(run_dir).glob("events.out.tfevents.*"):
                stale.unlink()
        self.domains = domains
        self.writer = SummaryWriter(log_dir=str(run_dir), flush_secs=max(1, round(flush_seconds)),
                                    purge_step=resume_step + 1 if resume_step > 0 else None)

    def _scalars(self, prefix: str, values: np.ndarray, step: int) -> None:
        for domain, value in zip(self.domains, values):
            if np.isfinite(value):  # a domain absent from the step's batch has no loss
                self.writer.add_scalar(f"{prefix}/{domain}", float(value), step)

    def write_step(self, step: int, *, lr: float, loss: float, tokens_per_s: float, domain_loss: np.ndarray,
                   weights: np.ndarray) -> None:
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("lr", lr, step)
        self.writer.add_scalar("tokens_per_s", tokens_per_s, step)
        self._scalars("train/loss", domain_loss, step)
        self._scalars("weights", weights, step)

    def write_heldout(self, step: int, domain_loss: np.ndarray) -> None:
        self.writer.add_scalar("val/loss", float(np.mean(domain_loss)), step)
        self._scalars("val/loss", domain_loss, step)

    def flush(self, sync: bool = False) -> None:
        # Not fsynced: a resume purges the events after its checkpoint anyway.
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
