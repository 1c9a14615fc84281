"""What lets the training loop queue step after step without waiting for the device.

- ``PendingStep``: a step whose per-domain losses nobody needed at once (the strategy does not
  update on it: ``Strategy.needs_step_stats``). Its sums stay on the device and travel to the
  host behind the step's work (models/step.py: ``PendingHostCopy``); the loop reads them after
  the next step is queued, checks them for NaN and writes the step's log row then. The row is
  the same as if it had been written at once; only when it is written changes.
- ``StopAgreement``: under DDP every rank must stop at the same step when any one of them got
  SIGTERM. Each rank's flag is all-reduced asynchronously and read one step later, so a stop
  request ends the run one step after it arrives, on every rank alike, with no collective the
  host waits for.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from models.step import PendingHostCopy, to_device


class StopRequested:
    """SIGINT/SIGTERM ask the loop to checkpoint at the end of the current step and exit.
    ``received`` (the class's) also keeps a signal that came after the loop's last step, while the
    run saved its outputs: a pack of runs (models/train_pack.py) then starts no other run."""

    received = False

    def __init__(self):
        self.requested = False
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame):
        self.requested = True
        StopRequested.received = True


@dataclass
class PendingStep:
    """One step's log row, waiting for its per-domain loss sums to reach the host."""

    step: int
    lr: float
    weights: np.ndarray  # the sampling weights the step used
    token_count: np.ndarray  # tokens per domain (known on the host)
    trace: Any  # the strategy's trace record after the step
    loss_weights: np.ndarray | None = None  # the per-domain weights of the step's loss (None: the token mean)
    copy: PendingHostCopy | None = None  # the loss sums on their way (None: ``loss_sum`` is already here)
    loss_sum: np.ndarray | None = None
    step_time: float = 0.0
    elapsed: float = 0.0
    tokens_seen: int = 0

    def domain_loss_sum(self) -> np.ndarray:
        if self.loss_sum is None:
            self.loss_sum = self.copy.result()["loss_sum"]
        return self.loss_sum


class StopAgreement:
    """True on every rank, at the same step, once any rank has asked to stop."""

    def __init__(self, device: torch.device, world_size: int):
        self.device, self.world_size = device, world_size
        self.in_flight: tuple | None = None  # (work, copy) of the previous step's flags

    def __call__(self, requested: bool) -> bool:
        if self.world_size == 1:
            return requested
        previous, self.in_flight = self.in_flight, None
        flag = to_device(np.array([float(requested)]), self.device)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, async_op=True)
        work.wait()  # NCCL: the stream waits, not the host
        self.in_flight = (work, PendingHostCopy({"stop": flag}))
        return previous is not None and bool(previous[1].result()["stop"][0] > 0)

    def close(self) -> None:
        """Let the last all-reduce finish before the process group goes."""
        if self.in_flight is not None:
            self.in_flight[1].result()
            self.in_flight = None
