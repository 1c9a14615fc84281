"""The stage of a run and the run itself, as values: what a strategy's runs are called on disk, in
the workflow's wildcards and in every table, parsed and written here alone.

A stage name is its kind, one of ``STAGE_KINDS`` (a strategy's ``stages`` are an ordered subset of
them ending in ``final``: strategies/base.py), then ``-rN`` for round N > 1 of an iterated strategy
(DoReMi's ``proxy-r2``), or ``-N`` for run N of a fan-out stage (RegMix's ``swarm-3``). A new kind
of stage is added to ``STAGE_KINDS`` (and to ``stages`` in rules/schemas/config.schema.yaml where
it takes settings): the workflow's wildcard and the tables' order are generated from the list."""

from __future__ import annotations

import contextlib
import functools
import re
from dataclasses import dataclass

# Every kind of stage, in the order a strategy's stages run (the tables' order too).
STAGE_KINDS = ("reference", "proxy", "swarm", "fit", "final")
# The kinds an iterated strategy repeats per round (DoReMi's ``rounds``: reference-r2, proxy-r2).
ROUND_KINDS = ("reference", "proxy")
# The kinds whose runs fan out (swarm-0 … swarm-{N-1}); a strategy's ``fan_out`` names only these.
FAN_OUT_KINDS = ("swarm",)
# The kinds that train nothing: a fit computes weights from the runs before it (models/fit.py, its own rule).
UNTRAINED_KINDS = ("fit",)
_NAME = re.compile(r"([a-z][a-z_]*)(?:-r(\d+)|-(\d+))?")


def stage_pattern(*, trained_only: bool) -> str:
    """The regular expression of the workflow's ``stage`` wildcard, generated from the kinds above:
    what ``Stage.parse`` reads, written per kind (``proxy(-r\\d+)?``, ``swarm-\\d+``, ``final``).
    ``trained_only`` leaves out the kinds that train nothing (the fit's rule has its own path). A
    fan-out kind's name alone (``swarm``, as a strategy declares it) is no run's name."""
    forms = []
    for kind in STAGE_KINDS:
        if trained_only and kind in UNTRAINED_KINDS:
            continue
        forms.append(rf"{kind}-\d+" if kind in FAN_OUT_KINDS else rf"{kind}(-r\d+)?" if kind in ROUND_KINDS else kind)
    return "|".join(forms)


TRAINED_STAGE_PATTERN = stage_pattern(trained_only=True)
STAGE_PATTERN = stage_pattern(trained_only=False)


@dataclass(frozen=True)
class Stage:
    """One stage of a strategy: ``kind`` (one of STAGE_KINDS, whose settings it takes:
    ``stages.<kind>``), ``round`` (1 unless an iterated strategy repeats the kind) and ``replica``
    (the index of one run of a fan-out stage; None for any other stage)."""
    kind: str
    round: int = 1
    replica: int | None = None

    def __post_init__(self):
        if self.kind not in STAGE_KINDS:
            raise ValueError(f"not a stage: kind {self.kind!r} is none of {', '.join(STAGE_KINDS)}")
        if self.round != 1 and self.kind not in ROUND_KINDS:
            raise ValueError(f"not a stage: round {self.round} of {self.kind!r}; only {', '.join(ROUND_KINDS)} "
                             f"have rounds")
        if self.replica is not None and self.kind not in FAN_OUT_KINDS:
            raise ValueError(f"not a stage: run {self.replica} of {self.kind!r}; only {', '.join(FAN_OUT_KINDS)} "
                             f"fans out")

    @staticmethod
    @functools.cache  # stage names are few, and they are parsed per run and per pair of runs
    def parse(name: str | Stage) -> Stage:
        """'proxy-r2' -> Stage('proxy', round=2); 'swarm-3' -> Stage('swarm', replica=3); 'final'.
        A Stage is returned as it is."""
        if isinstance(name, Stage):
            return name
        match = _NAME.fullmatch(name) if isinstance(name, str) else None
        if match and match.group(2) not in ("0", "1"):  # round 1 is written without a suffix
            kind, round_, replica = match.groups()
            with contextlib.suppress(ValueError):  # a kind, round or replica Stage refuses: said below
                return Stage(kind=kind, round=int(round_ or 1), replica=None if replica is None else int(replica))
        raise ValueError(f"not a stage name: {name!r} (one of {', '.join(STAGE_KINDS)}, then -rN for round N > 1 "
                         f"of {' or '.join(ROUND_KINDS)}, or -N for run N of {' or '.join(FAN_OUT_KINDS)})")

    def __str__(self) -> str:
        suffix = f"-r{self.round}" if self.round != 1 else ""
        return self.kind + suffix + (f"-{self.replica}" if self.replica is not None else "")

    @property
    def name(self) -> str:
        return str(self)

    @property
    def trains(self) -> bool:
        """Whether a run of this stage trains a model (and writes log.csv); a fit does not."""
        return self.kind not in UNTRAINED_KINDS

    @property
    def group(self) -> str:
        """What the run is listed under in tables, plans and messages: the runs of a fan-out stage
        under their stage, one row or column for all N ('swarm-3' -> 'swarm'); any other run under
        its own name ('proxy-r2' stays 'proxy-r2')."""
        return self.kind if self.replica is not None else str(self)

    def same_fan_out(self, other: str | Stage) -> bool:
        """Whether this run and ``other`` are runs of one fan-out stage (swarm-2 and swarm-5): they
        run side by side, and neither reads nor feeds the other."""
        return self.replica is not None and Stage.parse(other).group == self.group


@dataclass(frozen=True, kw_only=True)
class Run:
    """One run of a grid: a strategy of the grid (a variant by its own name), one of its stages, the
    run's own model size (a proxy's, which may differ from the final size it feeds) and the seed.
    A stage given by name is parsed here, once."""
    strategy: str
    stage: Stage
    size: str
    seed: int

    def __post_init__(self):
        object.__setattr__(self, "stage", Stage.parse(self.stage))

    def label(self) -> str:
        return f"{self.strategy} {self.stage} (size {self.size}, seed {self.seed})"


def describe_stages(stages: tuple[str, ...] | list[str]) -> str:
    """A run list as prose, a fan-out stage said once with its count: 'swarm-0 … swarm-63 (64 runs), fit, final'."""
    parts = []
    groups = [Stage.parse(s).group for s in stages]
    for group in dict.fromkeys(groups):
        runs = [s for s, g in zip(stages, groups) if g == group]
        parts.append(f"{runs[0]} … {runs[-1]} ({len(runs)} runs)" if group != runs[0] else group)
    return ", ".join(parts)


def one_run_per_stage(runs: dict[str, dict]) -> dict[str, dict]:
    """{stage: spec} with a fan-out stage's runs, which share their size and steps, as its first
    run alone: what a check of sizes and lengths needs to look at."""
    seen: set[str] = set()
    kept = {}
    for stage, spec in runs.items():
        group = Stage.parse(stage).group
        if group not in seen:
            seen.add(group)
            kept[stage] = spec
    return kept
