"""Read finished runs into long pandas tables, one row per measured number.

Every reader walks the grid's cells (sizes × strategies × seeds, in config order) whose runs and
evaluations pass the checks of eval/analysis/grid_check.py (``cells``: those of one check, or a
new check of the grid), and each strategy's stages as its declaration derives them, so a new
strategy appears with no change here. Rows carry provenance: the config hash and git commit of
the run, the seed and package versions; a row of an evaluation, that file's sha256
(``evaluation``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from corpus import budget
from eval.analysis.grid_check import Cell, check_grid
from eval.metrics import HELDOUT_METRICS
from mixbench.config import Stage, run_dir
from mixbench.errors import DataError
from mixbench.io import read_json
from mixbench.lineage import file_digest
from models.run_record import RunRecord
from strategies.runs import cell_runs

PROVENANCE = ("config_hash", "git_commit")
VERSIONED = ("torch", "transformers", "lm_eval")


def grid_cells(config: dict, cells: list[Cell] | None = None) -> Iterator[tuple[str, str, int, Path]]:
    """(size, strategy, seed, folder of the cell) for every cell in ``cells``, or where that is None
    every cell of the grid that passes its checks now (eval/analysis/grid_check.py), in grid order."""
    for size, strategy, seed in check_grid(config).kept if cells is None else cells:
        yield size, strategy, seed, Path(config["runs_dir"]) / size / strategy / f"seed{seed}"


def cell_stage_runs(config: dict, size: str, strategy: str, seed: int) -> dict[str, tuple[str, Path]]:
    """{stage: (the run's own size, its folder)} of every run one final model needs, in stage
    order. A reference or proxy of fixed size lives under its own size and is shared by every
    final size."""
    return {stage: (spec["size"], Path(run_dir(config, spec["size"], strategy, seed, stage)))
            for stage, spec in cell_runs(config, size, strategy).items()}


def _read(path: Path) -> dict:
    if not path.exists():
        raise DataError(f"{path} is missing: run `snakemake --cores all` to finish the grid first")
    return read_json(path)


def read_run(path: Path) -> RunRecord:
    """A finished run's run.json (models/run_record.py)."""
    return RunRecord.from_json(_read(path), where=str(path))


def provenance(run: RunRecord) -> dict:
    info = {key: getattr(run, key) for key in PROVENANCE}
    info.update({f"{pkg}_version": v for pkg, v in run.versions.items() if pkg in VERSIONED})
    return info


def perplexity(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    """size, strategy, seed, domain, a column per held-out metric (eval/metrics.py), evaluation (the
    sha256 of the perplexity.json), provenance."""
    rows = []
    for size, strategy, seed, cell in grid_cells(config, cells):
        path = cell / "final" / "eval" / "perplexity.json"
        run, results, evaluation = read_run(cell / "final" / "run.json"), _read(path), file_digest(path)
        missing = [d for d in config["corpus"]["domains"] if d not in results["tasks"]]
        if missing:
            raise DataError(f"{cell / 'final' / 'eval' / 'perplexity.json'} has no result for domain(s) {missing}; "
                            "rerun its evaluation")
        for domain in config["corpus"]["domains"]:  # corpus order, which every table keeps
            metrics = results["tasks"][domain]
            unscored = [m.name for m in HELDOUT_METRICS if m.name not in metrics]
            if unscored:  # scored before these were listed in eval/metrics.py
                raise DataError(f"{cell / 'final' / 'eval' / 'perplexity.json'} has no {', '.join(unscored)} for "
                                f"domain {domain!r}: regenerate the tasks and rerun every evaluation with "
                                "`snakemake --cores all --forcerun lm_eval_tasks` (and the grid's --configfile)")
            rows.append({"size": size, "strategy": strategy, "seed": seed, "domain": domain,
                         **{m.column: metrics[m.name] for m in HELDOUT_METRICS}, "evaluation": evaluation,
                         **provenance(run)})
    return pd.DataFrame(rows)


DOWNSTREAM_COLUMNS = ["size", "strategy", "seed", "task", "subtask", "domain", "metric", "value", "stderr", "examples",
                      "error", "evaluation"]


def downstream(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    """size, strategy, seed, task (as configured), subtask, domain, metric, value, stderr, examples,
    error, evaluation (the sha256 of the downstream.json), provenance; tasks in config order.

    A task that failed in a run (``failed`` in its downstream.json: it could not load its
    dataset, or failed while scoring) has one row with its ``error`` ("Exception: message")
    and no metric or value, so the tables show a missing cell for it rather than a number."""
    rows = []
    if not config["downstream"]["tasks"]:
        return pd.DataFrame(columns=DOWNSTREAM_COLUMNS)
    for size, strategy, seed, cell in grid_cells(config, cells):
        path = cell / "final" / "eval" / "downstream.json"
        run, results, evaluation = read_run(cell / "final" / "run.json"), _read(path), file_digest(path)
        failed = results.get("failed", {})  # absent from files written before tasks could fail alone
        by_task: dict[str, list[dict]] = {}
        for subtask, record in results["tasks"].items():
            for metric, value in record["metrics"].items():
                if metric.endswith("_stderr"):
                    continue
                by_task.setdefault(record["group"], []).append({
                    "size": size, "strategy": strategy, "seed": seed, "task": record["group"], "subtask": subtask,
                    "domain": record["domain"], "metric": metric, "value": value,
                    "stderr": record["metrics"].get(f"{metric}_stderr"), "examples": record["examples"],
                    "error": None, "evaluation": evaluation, **provenance(run)})
        for task, failure in failed.items():
            by_task[task] = [{"size": size, "strategy": strategy, "seed": seed, "task": task, "subtask": task,
                              "domain": None, "metric": None, "value": float("nan"), "stderr": None, "examples": None,
                              "error": f"{failure['exception']}: {failure['message']}", "evaluation": evaluation,
                              **provenance(run)}]
        missing = [t for t in config["downstream"]["tasks"] if t not in by_task]
        if missing:
            raise DataError(f"{path} has no result and no failure for task(s) {missing}; rerun its evaluation")
        # Configured order, then anything else the file holds.
        for task in dict.fromkeys([*config["downstream"]["tasks"], *by_task]):
            rows += by_task.get(task, [])
    if not rows:
        return pd.DataFrame(columns=DOWNSTREAM_COLUMNS)
    frame = pd.DataFrame(rows)
    frame["examples"] = frame["examples"].astype("Int64")  # whole numbers, empty where a task failed
    return frame


def weights(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    """The mixture each final model trained on (for a schedule: its mean over steps)."""
    rows = []
    for size, strategy, seed, cell in grid_cells(config, cells):
        mixture, run = _read(cell / "final" / "weights.json"), read_run(cell / "final" / "run.json")
        rows += [{"size": size, "strategy": strategy, "seed": seed, "domain": d, "weight": w, **provenance(run)}
                 for d, w in zip(mixture["domains"], mixture["final_weights"])]
    return pd.DataFrame(rows)


TRAJECTORY_COLUMNS = ["size", "strategy", "seed", "stage", "stage_size", "step", "domain", "weight", "mixture",
                      "excess"]
MAX_POINTS = 200  # steps per run in the trajectory and entropy tables: a long run's every step would repeat itself


def kept_steps(count: int) -> np.ndarray:
    """At most about MAX_POINTS evenly spaced row indices of ``count`` logged steps, the last included."""
    return np.unique(np.r_[np.arange(0, count, max(1, -(-count // MAX_POINTS))), count - 1])


def training_log(folder: Path, stage: str) -> pd.DataFrame | None:
    """The log.csv of a finished run of ``stage``, or None for a stage that trains nothing (a fit:
    its job writes no log). A stage that trains writes its log from the first step on, so a
    missing one is an error, not a run to leave out of the tables."""
    if not Stage.parse(stage).trains:
        return None
    path = folder / "log.csv"
    if not path.is_file():
        raise DataError(f"{path} is missing, though its {stage} stage trains and writes it: restore the file, "
                        f"or delete {folder} and rerun `snakemake --cores all` to train that run again")
    return pd.read_csv(path)


def step_mixtures(log: pd.DataFrame, domains: list[str]) -> tuple[str, np.ndarray]:
    """The mixture each step of a log.csv trained on, shape (steps, K), and what it is: the
    ``sampling`` weights, or where the stage weights its loss (``loss_weight/<d>`` columns:
    DoReMi's and DoGE's proxies, models/runlog.py) the ``loss-weighted`` mixture, sampling times
    loss weights, normalised (DoReMi's α_t, DoGE's α under their uniform sampling)."""
    sampling = log[[f"weight/{d}" for d in domains]].to_numpy(dtype=np.float64)
    loss_columns = [f"loss_weight/{d}" for d in domains]
    if not set(loss_columns) <= set(log.columns):
        return "sampling", sampling
    trained = sampling * log[loss_columns].to_numpy(dtype=np.float64)
    return "loss-weighted", trained / trained.sum(axis=1, keepdims=True)


def trajectories(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    """The mixture of every stage whose mixture changes during training, at each logged step
    (``step_mixtures`` of its log.csv; at most about MAX_POINTS steps per run), and where the
    strategy traces it DoReMi's per-domain excess loss (``excess``: the mean over the domain's
    tokens of the proxy's loss minus the reference's, each token clipped at 0, Xie et al. 2023
    Alg. 1; a domain absent from a step keeps its last value); ``size`` is the final size the run
    feeds, ``stage_size`` the run's own."""
    rows = []
    domains = config["corpus"]["domains"]
    for size, strategy, seed, _ in grid_cells(config, cells):
        for stage, (stage_size, folder) in cell_stage_runs(config, size, strategy, seed).items():
            log = training_log(folder, stage)
            if log is None or log.empty:  # a fit, or a run that stopped before its first step
                continue
            mixture, weights = step_mixtures(log, domains)
            if np.ptp(weights, axis=0).max() <= 1e-12:  # constant over the run: no trajectory
                continue
            excess = {r["step"]: r["excess"] for r in trace(folder) if "excess" in r}
            for i in kept_steps(len(log)):
                step = int(log["step"].iat[i])
                rows += [{"size": size, "strategy": strategy, "seed": seed, "stage": stage, "stage_size": stage_size,
                          "step": step, "domain": d, "weight": w, "mixture": mixture, "excess": e}
                         for d, w, e in zip(domains, weights[i], excess.get(step, [np.nan] * len(domains)))]
    return pd.DataFrame(rows, columns=TRAJECTORY_COLUMNS)


def compute(config: dict, cells: list[Cell] | None = None) -> pd.DataFrame:
    """One row per stage of every cell: its size, parameters, tokens, FLOPs and wall time, and
    its data budget: tokens trained per domain (``tokens/<domain>``, from the run's log.csv) and
    epochs per domain (``epochs/<domain>``: those tokens / the domain's train tokens in
    ``{data_dir}/tokens/meta.json``; above 1 the run repeated the domain), with the largest as
    ``max_epochs`` of ``max_epochs_domain``. Empty where a run has no log or the data no metadata.

    ``flops`` counts every forward and backward pass the stage made, a strategy's own
    overheads included; ``train_flops`` is 6·N·D for the training tokens alone. A reference or
    proxy shared by several final sizes appears in each of their rows (it is part of what each
    final model cost); ``run`` names its folder, so the grid's total counts it once."""
    rows = []
    runs_dir = Path(config["runs_dir"])
    domains = config["corpus"]["domains"]
    available = _available_train_tokens(config)
    trained: dict[Path, np.ndarray | None] = {}  # a shared run's log is read once
    for size, strategy, seed, _ in grid_cells(config, cells):
        for stage, (_, folder) in cell_stage_runs(config, size, strategy, seed).items():
            run = read_run(folder / "run.json")
            if folder not in trained:
                trained[folder] = _trained_tokens(folder / "log.csv", domains)
            rows.append({"size": size, "strategy": strategy, "seed": seed, "stage": stage,
                         "run": folder.relative_to(runs_dir).as_posix(),
                         "stage_size": run.size, "steps": run.steps, "parameters": run.parameters,
                         "tokens": run.tokens, "train_flops": run.train_flops,
                         # Runs written before overheads were counted have only 6·N·D.
                         "flops": run.total_flops,
                         "train_seconds": run.train_seconds, "wall_seconds": run.wall_seconds,
                         **data_budget(domains, trained[folder], available), **provenance(run)})
    return pd.DataFrame(rows)


def data_budget(domains: list[str], trained: np.ndarray | None, available: np.ndarray | None) -> dict:
    """max_epochs, max_epochs_domain, tokens/<domain> and epochs/<domain> of one run (NaN where unknown)."""
    tokens = np.full(len(domains), np.nan) if trained is None else trained
    ratio = np.full(len(domains), np.nan) if trained is None or available is None else budget.epochs(trained, available)
    known = not np.isnan(ratio).all()
    return {"max_epochs": float(np.nanmax(ratio)) if known else np.nan,
            "max_epochs_domain": domains[int(np.nanargmax(ratio))] if known else None,
            **{f"tokens/{d}": t for d, t in zip(domains, tokens)},
            **{f"epochs/{d}": r for d, r in zip(domains, ratio)}}


def _available_train_tokens(config: dict) -> np.ndarray | None:
    try:
        return budget.available_train_tokens(config["data_dir"], config["corpus"]["domains"])
    except DataError:  # no token metadata here (e.g. only the runs were copied): epochs unknown
        return None


def _trained_tokens(log: Path, domains: list[str]) -> np.ndarray | None:
    return budget.trained_tokens(log, domains) if log.exists() else None


def trace(stage_dir: Path) -> list[dict]:
    path = stage_dir / "trace.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
