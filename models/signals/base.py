"""The interface between the training loop and the providers of optional signals.

A provider is built once per run with the loop's ``ProviderHandles`` (the model, the pass
counter, the settings, the domains, where data and upstream runs live) and the options the
strategy gave for its signal. At each step on which the strategy wants the signal, the loop
calls ``compute`` and hands the result to the strategy as ``stats.extra[name]``. A result may
hold device tensors (small ones: norms, inner products, gathered losses): the loop brings every
tensor of the step's results to the host in one transfer (models/step.py: ``values_to_host``),
so a provider should not copy them itself.

A provider that ``computes_step_gradient`` (per-domain gradients) replaces the loop's own
forward and backward pass: the loop calls ``forward_backward`` instead, then, once the strategy
has updated, ``apply_gradient`` with the strategy's loss weights.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch


@dataclass
class SignalSources:
    """Where providers find their data: token files, upstream runs, the run's own folder."""

    data_dir: Path | None = None
    seed: int = 0
    upstream: dict[str, Path] = field(default_factory=dict)  # stage -> finished run folder
    run_dir: Path | None = None

    def token_store(self, split: str, domains):
        """The token files of ``split`` for ``domains``."""
        from corpus.tokens import TokenStore

        if self.data_dir is None:
            raise ValueError("this signal needs token files: build the loop with SignalSources(data_dir=...)")
        return TokenStore(Path(self.data_dir) / "tokens", split, list(domains))

    def sampler(self, split: str, domains, seq_len: int, stream: int):
        """A sampler over ``split`` with its own stream: drawing from it never shifts training batches."""
        from corpus.sampler import DomainSampler

        return DomainSampler(self.token_store(split, domains), seq_len, self.seed, stream=stream)


@dataclass
class ProviderHandles:
    """What the loop lends a provider."""

    model: torch.nn.Module  # for forward passes: compiled if asked for, never DDP-wrapped
    raw_model: torch.nn.Module  # the plain module: parameter names, functional calls
    passes: Any  # models.step.StepPasses: token losses, pass counts, collectives
    settings: Any  # models.optim.LoopSettings
    domains: tuple[str, ...]
    sources: SignalSources


@dataclass
class StepContext:
    """One optimizer step as a provider sees it."""

    step: int  # 1-based index of the step being taken
    lr: float
    batch: Any  # models.step.Batch of this rank
    token_loss: torch.Tensor | None = None  # (b, L) detached losses of this rank's training forward
    shared: dict[str, Any] = field(default_factory=dict)  # device values of signals computed earlier


class SignalProvider(ABC):
    """Computes one optional signal. Subclasses set ``uses`` if they read another signal's
    ``shared`` value of the same step, and override ``state_dict`` if they carry state."""

    uses: ClassVar[frozenset[str]] = frozenset()
    computes_step_gradient: ClassVar[bool] = False

    def __init__(self, *, name: str, handles: ProviderHandles, options: dict[str, Any]):
        self.name, self.handles, self.options = name, handles, dict(options)

    @abstractmethod
    def compute(self, step: StepContext) -> Any:
        """The signal's value for ``stats.extra[name]``: host data, or small device tensors the loop
        brings over (as numpy arrays of the same dtype and shape) with the step's other results."""

    @classmethod
    def parameter_copies(cls, num_domains: int) -> float:
        """Device memory this provider holds, in fp32 copies of the model's parameters (buffers
        of the model's size, another model): what models/memory.py adds to a run's estimate."""
        return 0.0

    def state_dict(self) -> dict[str, Any]:
        """This rank's state (sampler streams and the like) for exact resumption."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    # -- only for providers that compute the step's gradient themselves ---------------------
    def forward_backward(self, step: StepContext) -> torch.Tensor:
        """Every forward and backward pass of the step; returns the summed token loss per domain
        over every rank, float64, on the device."""
        raise NotImplementedError

    def apply_gradient(self, loss_weights: np.ndarray | None) -> None:
        """Set the model's ``.grad`` from what ``forward_backward`` computed."""
        raise NotImplementedError
