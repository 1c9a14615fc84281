"""The strategy interface: training signals in, mixture weights out.

The training loop (models/train.py) owns the loop. A strategy only
- declares the ``stages`` it needs (the workflow builds its DAG from them; a ``fan_out``
  stage runs N times side by side, and a ``fit`` stage computes weights without training) and the
  extra ``signals`` the loop must compute for it (so nobody else pays for them), each by
  its name in the registry of signal providers (models/signals/__init__.py); it passes
  options to a signal's provider through ``signal_options`` and says when it wants a
  signal through ``signal_due``;
- gives the ``initial_weights`` and, after each optimizer step, may return new weights
  from ``update(stats)``;
- may ask for a weighted training objective through ``loss_weights``;
- hands on ``final_weights`` (what a proxy run passes to the next stage);
- saves and restores its state for exact resumption;
- if some settings of its hyperparameters would leave the mixture unchanged for a whole run (an
  update interval past the run's end, smoothing that pins the weights), says so in
  ``static_reason``: the config check refuses such a grid before any job unless the entry sets
  ``allow_static: true``.

This module must stay free of torch: Snakemake reads ``stages`` while parsing the workflow.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from mixbench.config import FAN_OUT_KINDS, STAGE_KINDS
from mixbench.errors import ConfigError, TrainingError

# ``swarm`` runs N times side by side (a ``fan_out`` stage); ``fit`` trains nothing: its job builds
# the strategy, takes ``initial_weights()`` (computed from the runs before it) as the weights it
# hands on and writes ``fit_report()`` next to them (models/fit.py).
STAGE_ORDER = STAGE_KINDS  # mixbench/_stages.py: the one list of kinds, which stage names and wildcards are made of
# The hyperparameter that runs settings a strategy's ``static_reason`` refuses (a run that never
# changes its mixture); the runs' run.json then records ``allow_static: true``.
ALLOW_STATIC = "allow_static"


@dataclass(frozen=True)
class StrategyContext:
    """What a strategy may know about the run it is driving."""

    name: str  # the strategy's name in the grid (a config entry key)
    domains: tuple[str, ...]
    # Train-split tokens per domain before the corpus size cap (estimated from the byte
    # ratio), shape (K,): the domains' natural proportions, not the capped files' sizes.
    train_tokens: np.ndarray
    stage: str
    total_steps: int
    seed: int
    vocab_size: int
    upstream_weights: dict[str, np.ndarray] = field(default_factory=dict)  # stage -> final_weights
    # stage -> held-out loss per domain after the run's last step (the last row of its val.csv),
    # shape (K,); only for a ``fit`` stage, which reads what the runs before it reached.
    upstream_heldout: dict[str, np.ndarray] = field(default_factory=dict)
    # stage -> held-out loss per domain before the run's first step (the step-0 row of its val.csv,
    # which a run measures where its strategy's ``heldout_before_training`` says so); filled with
    # ``upstream_heldout``, for the upstream runs that have that row.
    upstream_heldout_initial: dict[str, np.ndarray] = field(default_factory=dict)
    warmup_steps: int = 0
    replica: int | None = None  # which run of a fan-out stage this is (swarm-3: 3); None elsewhere
    # The train split's tokens per domain as tokenized (after the cap): what a run's epochs are
    # counted against (corpus/budget.py); and the tokens the run trains on, steps × batch × seq_len.
    available_tokens: np.ndarray | None = None
    planned_tokens: int = 0


@dataclass
class StepStats:
    """Signals of one optimizer step, over all its micro-batches (and ranks)."""

    step: int  # 1-based index of the optimizer step just taken
    lr: float
    domain_loss: np.ndarray  # mean token loss per domain; nan where the domain was absent
    domain_tokens: np.ndarray  # tokens per domain in the step
    extra: dict[str, Any] = field(default_factory=dict)  # declared optional signals


class Strategy(ABC):
    """Base class of every mixing strategy. Subclasses set the class attributes and
    implement ``initial_weights``; everything else has a sensible default."""

    stages: ClassVar[tuple[str, ...]] = ("final",)
    # Optional signals by provider name; the config check refuses a name no provider computes.
    signals: ClassVar[frozenset[str]] = frozenset()
    # Hyperparameters with their defaults; the config may set exactly these keys.
    defaults: ClassVar[dict[str, Any]] = {}
    # Stages that run several times side by side, each with the hyperparameter that says how
    # many times: {"swarm": "swarm_runs"} makes runs swarm-0 … swarm-{N-1}, which read none of
    # each other; every later stage reads all of them. None instead of a hyperparameter: the count
    # follows from the domains, and the class overrides ``replicas_for`` (Skill-It: one run per domain).
    fan_out: ClassVar[dict[str, str | None]] = {}
    # True: a training run's context holds the upstream runs' final held-out losses
    # (``StrategyContext.upstream_heldout``), as a ``fit`` stage's always does.
    reads_upstream_heldout: ClassVar[bool] = False

    def __init__(self, context: StrategyContext, **hparams: Any):
        self.context = context
        self.hparams = {**self.defaults, **hparams}
        self._weight_sum = np.zeros(len(context.domains))
        self._weight_steps = 0

    # -- declaration -------------------------------------------------------------------
    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if list(cls.stages) != [s for s in STAGE_ORDER if s in cls.stages] or cls.stages[-1] != "final":
            raise TypeError(f"{cls.__name__}.stages must be an ordered subset of {STAGE_ORDER} ending in 'final'")
        # The workflow names the runs of a fan-out stage swarm-0 … swarm-{N-1}: `swarm` and only
        # `swarm` fans out (mixbench/_stages.py's FAN_OUT_KINDS).
        fans_out = set(FAN_OUT_KINDS) & set(cls.stages)
        counted_by_domains = None in cls.fan_out.values()
        overrides_replicas = cls.replicas_for.__func__ is not Strategy.replicas_for.__func__
        if (set(cls.fan_out) != fans_out or not set(cls.fan_out.values()) - {None} <= set(cls.defaults)
                or counted_by_domains != overrides_replicas):
            raise TypeError(f"{cls.__name__}: a `swarm` stage needs fan_out = {{'swarm': <hyperparameter with its "
                            f"number of runs>}} (or None, with replicas_for overridden), and only `swarm` fans "
                            f"out; got stages {cls.stages}, fan_out {cls.fan_out}")
        # A strategy that can be configured never to act says how (``static_reason``) and takes the
        # hyperparameter that runs such settings anyway; one that always keeps its weights takes neither.
        says_static = cls.static_reason.__func__ is not Strategy.static_reason.__func__
        if says_static != (ALLOW_STATIC in cls.defaults) or cls.defaults.get(ALLOW_STATIC, False) is not False:
            raise TypeError(f"{cls.__name__}: a strategy that overrides static_reason needs "
                            f"defaults[{ALLOW_STATIC!r}] = False, and only such a strategy takes it")

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        """Reject unknown keys and values whose type differs from the default's (null only where
        the default is null). Subclasses extend this for value checks; it runs before any job starts."""
        unknown = sorted(set(hparams) - set(cls.defaults), key=str)
        if unknown:
            valid = ", ".join(sorted(cls.defaults)) or "none"
            raise ConfigError(f"unknown hyperparameter(s) {unknown}; valid: {valid}")
        for key, value in hparams.items():
            default = cls.defaults[key]
            if default is None:
                continue  # the subclass checks what else it takes
            if value is None:
                raise ConfigError(f"hyperparameter {key!r} must be {type(default).__name__}, got null "
                                  f"(leave it out for its default, {default!r})")
            expected = (int, float) if isinstance(default, float) else type(default)
            if isinstance(value, bool) != isinstance(default, bool) or not isinstance(value, expected):
                raise ConfigError(f"hyperparameter {key!r} must be {type(default).__name__}, got {value!r}")

    @classmethod
    def check_training(cls, hparams: dict[str, Any], training: dict[str, Any], domains: list[str]) -> None:
        """Check the ``training`` section against what this strategy needs (e.g. a batch that
        can hold every domain); it runs with the config check, before any job starts."""

    @classmethod
    def check_stage_size(cls, hparams: dict[str, Any], *, stage: str, size: str, n_layer: int) -> None:
        """Refuse (ConfigError) a run of ``stage`` at model ``size`` (``n_layer`` blocks) that these
        hyperparameters (defaults filled in) cannot use; it runs with the config check, for every
        run of the grid, before any job starts."""

    @classmethod
    def static_reason(cls, hparams: dict[str, Any], *, stage: str, steps: int, warmup_steps: int,
                      domains: list[str]) -> str | None:
        """Why a run of ``stage`` (``steps`` optimizer steps, the first ``warmup_steps`` of them warmup;
        0 steps for a ``fit``) would never change the mixture it starts from with these hyperparameters
        (defaults filled in), or None. Only for the stage that adapts: a stage that is static by
        design (a reference, a final run on a proxy's weights) returns None. The reason is one
        clause with the numbers and the hyperparameter fix, e.g. "smoothing 1 ...; use smoothing < 1".
        The config check (strategies/grid_config.py) refuses such a grid before any job unless the
        strategy's entry sets ``allow_static: true``. Override it together with adding
        ``allow_static: False`` to ``defaults``."""
        return None

    @classmethod
    def stages_for(cls, hparams: dict[str, Any]) -> tuple[str, ...]:
        """The stages a configured instance runs; by default the declared ``stages``.
        Iterated methods repeat stages with a round suffix, e.g. ``proxy-r2``."""
        return cls.stages

    @classmethod
    def stage_hparams(cls, stage: str, hparams: dict[str, Any]) -> dict[str, Any]:
        """The hyperparameters a run of ``stage`` depends on (what its fingerprint holds, so that a
        change elsewhere retrains none of it); by default all of them."""
        return hparams

    @classmethod
    def input_files(cls, hparams: dict[str, Any]) -> list[str]:
        """Files a configured instance's ``fit`` stage reads besides runs (RegMix's ``swarm_files``):
        the workflow reruns the fit when one changes."""
        return []

    @classmethod
    def replicas_for(cls, hparams: dict[str, Any], domains: list[str]) -> dict[str, int]:
        """{fan-out stage: number of its runs} of a configured instance (its ``check_hparams``
        makes sure each count is a positive integer). A class whose ``fan_out`` names no
        hyperparameter (None) overrides this with the count its domains give."""
        return {stage: int(hparams[key]) for stage, key in cls.fan_out.items()}

    # -- the interface the loop calls -------------------------------------------------------
    def required_signals(self) -> frozenset[str]:
        """Optional signals this stage needs (a subset of ``signals``)."""
        return self.signals

    def reweights_current_step(self) -> bool:
        """True if ``loss_weights`` after ``update(stats)`` must weight the same step's loss."""
        return False

    def signal_options(self) -> dict[str, dict[str, Any]]:
        """Options for the providers of this stage's signals, by signal name (each provider's
        docstring lists what it takes)."""
        return {}

    def heldout_before_training(self) -> bool:
        """True to measure the held-out loss before the first step too (a step-0 row in val.csv),
        for a later stage that reads where the run started (``upstream_heldout_initial``)."""
        return False

    def signal_due(self, signal: str, step: int) -> bool:
        """Whether the loop computes ``signal`` at this (1-based) step; by default at every step."""
        return True

    def stratified_batches(self) -> bool:
        """True to draw each batch stratified (each domain ⌊n·w_i⌋ rows, the remainder at random
        with the right marginals; for uniform weights an equal share) instead of i.i.d.: the same
        expected counts, no absent domain."""
        return False

    def fit_report(self) -> dict[str, Any] | None:
        """In a ``fit`` stage, after ``initial_weights()``: how the weights were chosen, JSON-ready
        (written to the run's fit.json), or None."""
        return None

    def trace(self) -> dict[str, Any] | None:
        """The strategy's own extras worth recording after this step (written to trace.jsonl), or
        None; each strategy's docstring lists its keys. The weights themselves need no trace: every
        run's log.csv holds the sampling weights and, where the stage has them, the loss weights of
        every step, and the trajectory tables and figures read them from there."""
        return None

    @abstractmethod
    def initial_weights(self) -> np.ndarray:
        """Sampling weights of the first step, shape (K,), on the simplex."""

    def update(self, stats: StepStats) -> np.ndarray | None:
        """New sampling weights after a step, or None to keep the current ones."""
        return None

    def needs_step_stats(self, step: int) -> bool:
        """Whether ``update`` must see this (1-based) step's stats before the next step is sampled.
        A step that needs none makes the host wait for nothing: its losses reach the log a step
        later, and ``update`` is not called for it. By default: whenever ``update`` is overridden."""
        return type(self).update is not Strategy.update

    def loss_weights(self) -> np.ndarray | None:
        """Per-domain weights of the training objective, or None for the plain token mean."""
        return None

    def has_loss_weights(self) -> bool:
        """Whether this stage may weight its loss (``loss_weights``): the run's log.csv then records
        each step's loss weights as ``loss_weight/<d>`` columns, the mixture a step trained on being
        its sampling weights times its loss weights, normalised. Decided by the strategy and stage,
        never by a step, so that the log's columns are the same for a resumed run. By default:
        whenever ``loss_weights`` is overridden; a strategy that weights only some stages says which."""
        return type(self).loss_weights is not Strategy.loss_weights

    def record(self, weights: np.ndarray) -> None:
        """Called by the loop with the weights every step trained on."""
        self._weight_sum += weights
        self._weight_steps += 1

    def final_weights(self) -> np.ndarray:
        """What this run hands on: by default the mean of the weights over its steps."""
        if self._weight_steps == 0:
            return self.initial_weights()
        return self._weight_sum / self._weight_steps

    def state_dict(self) -> dict[str, Any]:
        return {"weight_sum": self._weight_sum.copy(), "weight_steps": self._weight_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._weight_sum = np.asarray(state["weight_sum"], dtype=float).copy()
        self._weight_steps = int(state["weight_steps"])


def first_update_after(warmup_steps: int, every: int) -> int:
    """The first multiple of ``every`` after ``warmup_steps``: where a strategy that updates every
    ``every`` steps once its warmup is over first updates."""
    return (warmup_steps // every + 1) * every


def named_mixture(key: str, name: Any, context: StrategyContext) -> np.ndarray:
    """The mixture a hyperparameter ``key`` names: ``natural`` (the domains' train tokens before the
    corpus cap, the context's ``train_tokens``) or ``uniform``; a ConfigError for anything else."""
    check_named_mixture(key, name)
    if name == "natural":
        tokens = np.asarray(context.train_tokens, dtype=np.float64)
        return tokens / tokens.sum()
    return np.full(len(context.domains), 1 / len(context.domains))


def check_named_mixture(key: str, name: Any) -> None:
    """Refuse, before any job, a hyperparameter that names no mixture ``named_mixture`` knows."""
    if name not in ("natural", "uniform"):
        raise ConfigError(f"{key} must be 'natural' or 'uniform', got {name!r}")


def validate_weights(weights: Any, num_domains: int, strategy: str, step: int, atol: float = 1e-6,
                     what: str = "weights", on_simplex: bool = True) -> np.ndarray:
    """Check a weight vector is finite, non-negative, of length K and (``on_simplex``) sums to 1.

    Returns it renormalised: solvers answer within ~1e-8 of the simplex, numpy's sampler
    accepts less slack than that. Negatives down to -1e-9 are solver round-off and become 0.
    """
    w = np.asarray(weights, dtype=np.float64)
    where = f"strategy {strategy!r} at step {step}"
    if w.shape != (num_domains,):
        raise TrainingError(f"{where} returned {what} of shape {w.shape}, expected ({num_domains},)")
    if not np.all(np.isfinite(w)):
        raise TrainingError(f"{where} returned non-finite {what} {w.tolist()}")
    if np.any(w < -1e-9):
        raise TrainingError(f"{where} returned negative {what} {w.tolist()}")
    w = np.clip(w, 0.0, None)
    if on_simplex and abs(w.sum() - 1.0) > atol:
        raise TrainingError(f"{where} returned {what} summing to {w.sum():.8f}, not 1: {w.tolist()}")
    if w.sum() <= 0:
        raise TrainingError(f"{where} returned {what} that are all zero")
    return w / w.sum() if on_simplex else w


def check_name_pattern(key: str, pattern: Any, null_means: str | None = None) -> None:
    """A hyperparameter that is a regular expression over parameter names (or null, where
    ``null_means`` says what null stands for)."""
    if pattern is None and null_means is not None:
        return
    try:
        re.compile(pattern)
    except (TypeError, re.error) as exc:
        alternative = f" or null ({null_means})" if null_means else ""
        raise ConfigError(f"{key} must be a regular expression over parameter names{alternative}, "
                          f"got {pattern!r} ({exc})") from None
