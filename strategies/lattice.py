"""Grid search on a simplex lattice: every mixture whose weights are multiples of 1/d.

Stages ``swarm → final``:

- swarm (a fan-out stage, ``points`` runs ``swarm-0 … swarm-{P-1}``): run r trains on lattice
  point r, a static mixture. The lattice of K domains at resolution d holds every
  w = (n_1, …, n_K) / d with non-negative integers n_i summing to d: C(d + K - 1, K - 1) points
  (28 for K = 3, d = 6), enumerated in lexicographic order of (n_1, …, n_K) from (0, …, 0, d) to
  (d, 0, …, 0). A run depends on its point alone, so ``points`` must be the lattice's size
  (the config check names it). Lattice points may give a domain no weight at all.
- final: a static run on the point whose swarm run has the lowest mean held-out loss over
  domains on the validation split (the val windows of models/heldout.py, measured after the
  last step), the first such point on a tie: the best mixture a grid search would pick without
  looking at the test split.

The landscape study (config/landscape.yaml, docs/landscape.md) trains the lattice's runs at the
final models' size and steps and scores each on the test split, which gives every strategy of
the study a ground truth to be measured against. In a grid of its own, ``lattice`` is the
grid-search baseline that costs (points + 1) final runs per seed.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from mixbench.config import Stage
from mixbench.errors import ConfigError, TrainingError
from strategies.base import Strategy

MAX_POINTS = 4096  # each point is a training run


def lattice_size(domains: int, divisions: int) -> int:
    """C(d + K - 1, K - 1): how many mixtures of K domains have weights in multiples of 1/d."""
    return math.comb(divisions + domains - 1, domains - 1)


def lattice_points(domains: int, divisions: int) -> np.ndarray:
    """Every lattice mixture, (points, K), in lexicographic order of its counts (n_1, …, n_K)."""
    if domains < 1 or divisions < 1:
        raise ValueError(f"need >= 1 domain and >= 1 division, got {domains} and {divisions}")

    def counts(left: int, slots: int):
        if slots == 1:
            yield (left,)
            return
        for first in range(left + 1):
            for rest in counts(left - first, slots - 1):
                yield (first, *rest)

    return np.array(list(counts(divisions, domains)), dtype=np.float64) / divisions


class Lattice(Strategy):
    stages = ("swarm", "final")
    fan_out = {"swarm": "points"}
    defaults = {"divisions": 6, "points": 28}

    @classmethod
    def check_hparams(cls, hparams: dict[str, Any], domains: list[str]) -> None:
        super().check_hparams(hparams, domains)
        h = {**cls.defaults, **hparams}
        if h["divisions"] < 1:
            raise ConfigError(f"divisions must be >= 1 (weights in multiples of 1/divisions), got {h['divisions']}")
        size = lattice_size(len(domains), h["divisions"])
        if size > MAX_POINTS:
            raise ConfigError(f"divisions {h['divisions']} over {len(domains)} domains make {size:,} lattice points, "
                              f"each a training run; the most is {MAX_POINTS:,}: lower divisions or the domains")
        if h["points"] != size:
            raise ConfigError(f"divisions {h['divisions']} over {len(domains)} domains make {size} lattice points "
                              f"(C({h['divisions']} + {len(domains)} - 1, {len(domains)} - 1)); set points: {size}, "
                              f"got {h['points']}")

    @classmethod
    def stage_hparams(cls, stage: str, hparams: dict[str, Any]) -> dict[str, Any]:
        if Stage.parse(stage).replica is not None:  # swarm-r: its point, from divisions and K alone
            return {"divisions": hparams["divisions"]}
        return hparams

    @classmethod
    def check_training(cls, hparams: dict[str, Any], training: dict[str, Any], domains: list[str]) -> None:
        if training["heldout_windows"] == 0:
            raise ConfigError("lattice picks its final mixture by the swarm runs' held-out losses: "
                              "training.heldout_windows must be > 0")

    def points(self) -> np.ndarray:
        return lattice_points(len(self.context.domains), self.hparams["divisions"])

    def initial_weights(self) -> np.ndarray:
        if self.context.replica is not None:  # swarm-r
            return self.points()[self.context.replica]
        names = [str(Stage(kind="swarm", replica=r)) for r in range(self.hparams["points"])]
        missing = [n for n in names if n not in self.context.upstream_heldout]
        if missing:
            raise TrainingError(f"lattice's final run picks the best swarm run by held-out loss; missing {missing}: "
                                f"pass --upstream swarm-R=DIR for every run")
        macro = np.array([np.mean(self.context.upstream_heldout[n]) for n in names])
        return self.points()[int(np.argmin(macro))]
