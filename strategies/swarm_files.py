"""A swarm's runs read from files instead of trained: each run's mixture and its held-out loss per
domain, for RegMix's fit stage (``swarm_files`` of strategies/regmix.py) and the published-swarm
track (eval/analysis/published_swarm.py).

Two CSV files, their rows matched by an ``index`` column:

- mixtures: ``index``, then one column per domain with the run's weight on it;
- losses: ``index``, then one column per domain with the run's loss on it (the domains may be a
  subset of the mixture's: a run can train on domains it is not scored on).

A column is named by its domain, or as in RegMix's released swarm (sail-sg/regmix ``data/``):
``train_the_pile_<domain>`` for a weight, ``metric/the_pile_<domain>_val_loss`` for a loss. Each
mixture must sum to 1 within 0.01 (the released ones are rounded to 3 decimals and sum to
0.996–1.003); it is used as written, not renormalised.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mixbench.errors import ConfigError

# (prefix, suffix) of the released swarm's column names, by file.
RELEASED_AFFIXES = {"mixtures": ("train_the_pile_", ""), "losses": ("metric/the_pile_", "_val_loss")}
SUM_TOLERANCE = 0.01


@dataclass(frozen=True)
class SwarmRuns:
    index: list[str]  # each run's id, in the mixtures file's order
    mixture_domains: list[str]
    mixtures: np.ndarray  # (runs, mixture domains)
    loss_domains: list[str]
    losses: np.ndarray  # (runs, loss domains)

    def mixtures_over(self, domains: list[str]) -> np.ndarray:
        """The mixtures with their columns in the order of ``domains`` (the same set)."""
        if sorted(domains) != sorted(self.mixture_domains):
            raise ConfigError(f"the swarm's mixtures are over {self.mixture_domains}, not {domains}")
        return self.mixtures[:, [self.mixture_domains.index(d) for d in domains]]

    def loss_of(self, domain: str) -> np.ndarray:
        if domain not in self.loss_domains:
            raise ConfigError(f"the swarm has no loss on {domain!r}; its losses: {self.loss_domains}")
        return self.losses[:, self.loss_domains.index(domain)]


def domain_of(column: str, kind: str) -> str:
    prefix, suffix = RELEASED_AFFIXES[kind]
    if column.startswith(prefix) and column.endswith(suffix) and len(column) > len(prefix) + len(suffix):
        return column[len(prefix): len(column) - len(suffix)]
    return column


def read_table(path: Path, kind: str) -> tuple[list[str], list[str], np.ndarray]:
    """(run ids, domains, values (runs, domains)) of one file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"swarm {kind} file {path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    fewest = 2 if kind == "mixtures" else 1  # a mixture is over >= 2 domains; a loss may be of one
    if not rows or not rows[0] or rows[0][0] != "index" or len(rows[0]) < 1 + fewest:
        raise ConfigError(f"{path}: the first column must be `index` and at least {fewest} domain column(s) follow; "
                          f"header {rows[0] if rows else '(empty file)'}")
    domains = [domain_of(column, kind) for column in rows[0][1:]]
    if len(set(domains)) != len(domains):
        raise ConfigError(f"{path}: a domain is named twice in {domains}")
    values = []
    for number, row in enumerate(rows[1:], start=2):
        try:
            values.append([float(v) for v in row[1:]])
        except ValueError:
            raise ConfigError(f"{path} line {number}: not a number in {row}") from None
        if len(row) != len(rows[0]) or not np.all(np.isfinite(values[-1])):
            raise ConfigError(f"{path} line {number}: need {len(rows[0]) - 1} finite values, got {row[1:]}")
    return [row[0] for row in rows[1:]], domains, np.array(values, dtype=np.float64).reshape(-1, len(domains))


def read_swarm(mixtures: str | Path, losses: str | Path) -> SwarmRuns:
    """The runs of a swarm's two files (the module's docstring), checked."""
    index, mixture_domains, weights = read_table(Path(mixtures), "mixtures")
    loss_index, loss_domains, loss_values = read_table(Path(losses), "losses")
    if sorted(index) != sorted(loss_index) or len(set(index)) != len(index):
        raise ConfigError(f"{mixtures} and {losses} must list the same runs once each by `index`: "
                          f"{len(index)} and {len(loss_index)} rows, {len(set(index) ^ set(loss_index))} ids in one only")
    if not set(loss_domains) <= set(mixture_domains):
        raise ConfigError(f"{losses} scores domains no run trains on: {sorted(set(loss_domains) - set(mixture_domains))}")
    sums = weights.sum(axis=1)
    worst = int(np.abs(sums - 1).argmax()) if len(sums) else 0
    if np.any(weights < 0) or (len(sums) and abs(sums[worst] - 1) > SUM_TOLERANCE):
        raise ConfigError(f"{mixtures}: every mixture must be non-negative and sum to 1 within {SUM_TOLERANCE}; "
                          f"run {index[worst]} sums to {sums[worst]:.4f}")
    order = [loss_index.index(i) for i in index]
    return SwarmRuns(index=index, mixture_domains=mixture_domains, mixtures=weights, loss_domains=loss_domains,
                     losses=loss_values[order])
