"""Read the ``fit`` stages of the grid (RegMix's regression on its swarm) into long tables.

- ``fits``: one row per fit (size, strategy, seed): what it fitted (target, regressor, swarm
  runs, folds), its quality (``spearman``: the k-fold rank correlation between observed and
  out-of-fold predicted targets), the predicted target of the chosen mixture and the best
  observed one, the chosen mixture (``weight/<domain>``) and the natural one it drew around
  (``natural/<domain>``);
- ``swarm``: one row per run the fit read: its mixture (``weight/<domain>``), concentration,
  observed target, out-of-fold and in-sample predictions.

A fit feeds one final size; with a fixed swarm size, every final size's fit reads the same swarm
runs, and each fit appears under its own final size.
"""

from __future__ import annotations

import pandas as pd

from eval.analysis.collect import _read, cell_stage_runs, grid_cells, provenance, read_run
from eval.analysis.grid_check import Cell
from mixbench.errors import DataError

FIT_COLUMNS = ["size", "strategy", "seed", "target", "regressor", "swarm_runs", "folds", "spearman",
               "predicted_target_of_chosen", "best_observed", "candidates", "top_k"]
SWARM_COLUMNS = ["size", "strategy", "seed", "stage", "concentration", "observed", "predicted_out_of_fold", "predicted"]


def fitted_cells(config: dict, cells: list[Cell] | None = None):
    """(size, strategy, seed, fit.json) of every cell of ``cells`` (collect.grid_cells) whose strategy
    has a fit stage."""
    for size, strategy, seed, _ in grid_cells(config, cells):
        runs = cell_stage_runs(config, size, strategy, seed)
        if "fit" in runs:
            folder = runs["fit"][1]
            run = read_run(folder / "run.json")  # a clear error if the grid is unfinished
            if not (folder / "fit.json").exists():
                raise DataError(f"{folder / 'fit.json'} is missing beside its run.json: the fit stage of {strategy} "
                                f"seed {seed} wrote no report (strategy.fit_report() returned None?)")
            report = _read(folder / "fit.json")
            if report["domains"] != list(config["corpus"]["domains"]):
                raise DataError(f"{folder / 'fit.json'} is over the domains {report['domains']}, not the config's "
                                f"{config['corpus']['domains']}: rerun the grid")
            yield size, strategy, seed, report, run


def fits(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    domains = config["corpus"]["domains"]
    rows = []
    for size, strategy, seed, report, run in fitted_cells(config, cells):
        rows.append({"size": size, "strategy": strategy, "seed": seed,
                     **{key: report.get(key) for key in FIT_COLUMNS[3:]},
                     "best_observed": min(r["observed"] for r in report["runs"]),
                     **{f"weight/{d}": w for d, w in zip(domains, report["chosen"])},
                     **{f"natural/{d}": w for d, w in zip(domains, report["natural"])}, **provenance(run)})
    return pd.DataFrame(rows, columns=None if rows else FIT_COLUMNS)


def swarm(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    domains = config["corpus"]["domains"]
    rows = [{"size": size, "strategy": strategy, "seed": seed, **{key: r.get(key) for key in SWARM_COLUMNS[3:]},
             **{f"weight/{d}": w for d, w in zip(domains, r["weights"])}}
            for size, strategy, seed, report, _ in fitted_cells(config, cells) for r in report["runs"]]
    return pd.DataFrame(rows, columns=None if rows else SWARM_COLUMNS)


def fits_table(frame: pd.DataFrame) -> pd.DataFrame:
    """The markdown view: each fit's quality and choice, one row per seed (no pooled interval: a
    handful of seeds of a rank correlation over a few runs supports none)."""
    if frame.empty:
        return pd.DataFrame({"note": ["no strategy of the grid has a fit stage"]})
    weights = [c for c in frame.columns if c.startswith("weight/")]
    out = frame[["size", "strategy", "seed", "target", "regressor", "swarm_runs", "folds"]].copy()
    out["Spearman ρ (k-fold)"] = frame["spearman"].map(lambda v: f"{v:.3f}")
    out["predicted target of chosen"] = frame["predicted_target_of_chosen"].map(lambda v: f"{v:.4f}")
    out["best observed"] = frame["best_observed"].map(lambda v: f"{v:.4f}")
    for column in weights:
        out[column.removeprefix("weight/")] = frame[column].map(lambda v: f"{v:.3f}")
    return out.astype(str)
