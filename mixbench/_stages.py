"""The stage of a run, as a value: what a strategy's runs are called on disk, in the workflow's
wildcards and in every table, parsed and written here alone.

A stage name is its kind (``reference``, ``proxy``, ``swarm``, ``fit``, ``final``, or a kind a new
strategy declares), then ``-rN`` for round N > 1 of an iterated strategy (DoReMi's ``proxy-r2``),
or ``-N`` for run N of a fan-out stage (RegMix's ``swarm-3``)."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

# The `stage` wildcard of the workflow's run paths: DoReMi's rounds (proxy-r2), a swarm's runs
# (swarm-3), RegMix's fit (its own rule: it trains nothing) and the final model.
TRAINED_STAGE_PATTERN = r"(reference|proxy)(-r\d+)?|swarm-\d+|final"
STAGE_PATTERN = TRAINED_STAGE_PATTERN + "|fit"
_NAME = re.compile(r"([a-z][a-z_]*)(?:-r(\d+)|-(\d+))?")


@dataclass(frozen=True)
class Stage:
    """One stage of a strategy: ``kind`` (whose settings it takes: ``stages.<kind>``), ``round``
    (1 unless an iterated strategy repeats the kind) and ``replica`` (the index of one run of a
    fan-out stage; None for any other stage)."""
    kind: str
    round: int = 1
    replica: int | None = None

    @staticmethod
    @functools.cache  # stage names are few, and they are parsed per run and per pair of runs
    def parse(name: str) -> Stage:
        """'proxy-r2' -> Stage('proxy', round=2); 'swarm-3' -> Stage('swarm', replica=3); 'final'."""
        match = _NAME.fullmatch(name) if isinstance(name, str) else None
        if not match or match.group(2) in ("0", "1"):  # round 1 is written without a suffix
            raise ValueError(f"not a stage name: {name!r} (a kind such as proxy, then -rN for round N > 1 "
                             f"or -N for run N of a fan-out stage)")
        kind, round_, replica = match.groups()
        return Stage(kind=kind, round=int(round_ or 1), replica=None if replica is None else int(replica))

    def __str__(self) -> str:
        suffix = f"-r{self.round}" if self.round != 1 else ""
        return self.kind + suffix + (f"-{self.replica}" if self.replica is not None else "")

    @property
    def name(self) -> str:
        return str(self)

    @property
    def group(self) -> str:
        """What the run is listed under in tables, plans and messages: the runs of a fan-out stage
        under their stage, one row or column for all N ('swarm-3' -> 'swarm'); any other run under
        its own name ('proxy-r2' stays 'proxy-r2')."""
        return self.kind if self.replica is not None else str(self)

    def same_fan_out(self, other: str | Stage) -> bool:
        """Whether this run and ``other`` are runs of one fan-out stage (swarm-2 and swarm-5): they
        run side by side, and neither reads nor feeds the other."""
        other = other if isinstance(other, Stage) else Stage.parse(other)
        return self.replica is not None and other.group == self.group


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
