"""Read the runs' training logs into long tables: held-out curves and mixture entropy.

- ``curves``: every measurement of ``val.csv`` (models/heldout.py) of every stage of every
  cell, one row per domain, with the tokens and FLOPs the run had spent and ``upstream_flops``,
  what the cell's earlier stages (reference, proxy, a whole swarm) cost in all: the compute-fair
  x axis of a final model is ``upstream_flops + flops``.
- ``entropy``: the entropy (nats) of each trained stage's mixture over its steps, from its
  log.csv (``collect.training_log``): the sampling weights the steps used, or where the stage
  weights its loss (DoReMi's and DoGE's proxies, which learn α while sampling uniformly) the
  loss-weighted mixture (``collect.step_mixtures``).

Runs written before held-out curves existed have no val.csv: they give no rows, and the figures
say so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from eval.analysis.collect import cell_stage_runs, grid_cells, kept_steps, read_run, step_mixtures, training_log
from eval.analysis.grid_check import Cell
from mixbench.config import Stage

CURVE_COLUMNS = ["size", "strategy", "seed", "stage", "stage_size", "step", "tokens", "flops", "upstream_flops",
                 "domain", "val_loss"]
ENTROPY_COLUMNS = ["size", "strategy", "seed", "stage", "step", "tokens", "entropy", "mixture"]


def _stages(config: dict, cells: list[Cell] | None):
    """(size, strategy, seed, stage, stage size, folder, FLOPs of the cell's earlier stages) of the
    ``cells`` (collect.grid_cells)."""
    for size, strategy, seed, _ in grid_cells(config, cells):
        flops: dict[str, int] = {}  # of the runs before, each run.json read once
        previous: tuple[str, Path] | None = None
        for stage, (stage_size, folder) in cell_stage_runs(config, size, strategy, seed).items():
            if previous is not None:  # read only once a later run needs it
                flops[previous[0]] = read_run(previous[1] / "run.json").total_flops
            # A stage runs once every run before it has finished, except that the runs of a
            # fan-out stage (swarm-0 … swarm-{N-1}) run side by side and spend nothing for each other.
            upstream = sum(f for s, f in flops.items() if not Stage.parse(stage).same_fan_out(s))
            yield size, strategy, seed, stage, stage_size, folder, upstream
            previous = (stage, folder)


def _with(config: dict, cells: list[Cell] | None, name: str):
    """_stages of the runs that have the file ``name``, with the file's path in front."""
    for stage in _stages(config, cells):
        if (stage[5] / name).exists():
            yield stage[5] / name, *stage


def curves(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    domains = config["corpus"]["domains"]
    frames = []
    for path, size, strategy, seed, stage, stage_size, folder, upstream in _with(config, cells, "val.csv"):
        val = pd.read_csv(path).drop(columns="val_loss")  # the macro average: the figures take it from the domains
        long = val.melt(id_vars=["step", "tokens", "flops"], value_vars=[f"val_loss/{d}" for d in domains],
                        var_name="domain", value_name="val_loss")
        long["domain"] = long["domain"].str.removeprefix("val_loss/")
        frames.append(long.assign(size=size, strategy=strategy, seed=seed, stage=stage, stage_size=stage_size,
                                  upstream_flops=upstream))
    return pd.concat(frames)[CURVE_COLUMNS] if frames else pd.DataFrame(columns=CURVE_COLUMNS)


def mixture_entropy(weights: np.ndarray) -> np.ndarray:
    """-Σ w log w per row (0 log 0 = 0), in nats; log K for the uniform mixture of K domains."""
    weights = np.asarray(weights, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(weights > 0, weights * np.log(weights), 0.0)
    return -terms.sum(axis=1)


def entropy(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    domains = config["corpus"]["domains"]
    rows = []
    for size, strategy, seed, stage, _, folder, _ in _stages(config, cells):
        log = training_log(folder, stage)
        if log is None or log.empty:  # a fit, or a run that stopped before its first step
            continue
        mixture, weights = step_mixtures(log, domains)
        keep = kept_steps(len(log))
        values = mixture_entropy(weights)
        rows += [{"size": size, "strategy": strategy, "seed": seed, "stage": stage, "step": int(log["step"].iat[i]),
                  "tokens": int(log["tokens"].iat[i]), "entropy": float(values[i]), "mixture": mixture}
                 for i in keep]
    return pd.DataFrame(rows, columns=ENTROPY_COLUMNS)
