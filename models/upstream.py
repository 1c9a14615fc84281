"""What a run knows of the runs before it, and the strategy context built from it. Torch-free:
the training job (models/train.py) and the fit job (models/fit.py) both start from here.

A run before it that was trained on other token files or with another tokenizer (a proxy of
another corpus) is refused: its weights and losses are not this data's (``check_upstream_data``)."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np

from corpus.budget import planned_tokens
from corpus.tokens import TokenStore, uncapped_train_tokens
from mixbench.config import Run
from mixbench.errors import ConfigError, DataError
from mixbench.io import read_json
from mixbench.lineage import TRAINING_LOG, differences
from models.run_inputs import data_inputs
from models.run_record import RunRecord
from strategies import StrategyContext


def read_upstream(pairs: list[str]) -> dict[str, Path]:
    """``--upstream STAGE=DIR ...`` as {stage: folder}; each folder must hold a finished run."""
    upstream = {}
    for pair in pairs:
        stage, _, path = pair.partition("=")
        if not path or not (Path(path) / "run.json").exists():
            raise ConfigError(f"--upstream {pair!r}: expected STAGE=DIR of a finished run (with run.json)")
        if not (Path(path) / TRAINING_LOG).is_file():  # a run whose training left no record is not accepted
            raise DataError(f"{Path(path) / TRAINING_LOG} is missing: upstream run {stage!r} kept no training log, "
                            f"so it is incomplete; train it again (remove {Path(path) / 'run.json'} and run the "
                            "workflow again)")
        upstream[stage] = Path(path)
    return upstream


def check_upstream_data(data_dir: str | Path, upstream: dict[str, Path]) -> None:
    """Refuse, in one line naming the run and what differs, a run before this one whose run.json
    records other token files or another tokenizer than ``data_dir``'s; warn, in one line, of one
    that records no inputs (written before runs recorded them: it cannot be checked)."""
    current = data_inputs(data_dir)
    for stage, folder in upstream.items():
        path = Path(folder) / "run.json"
        inputs = RunRecord.read(path).inputs
        if inputs is None:
            print(f"warning: {path} records no inputs (an older run): whether upstream run {stage!r} was trained on "
                  f"this data's token files and tokenizer cannot be checked", file=sys.stderr, flush=True)
            continue
        changed = differences({name: inputs.get(name) for name in current}, current)
        if changed:
            raise DataError(f"upstream run {stage!r} ({folder}) was trained on other data than {data_dir}'s "
                            f"({'; '.join(changed)}); retrain it: remove {folder} and run the workflow again")


def heldout_rows(run_dir: Path) -> list[dict]:
    """The rows of a run's val.csv (at least one)."""
    path = run_dir / "val.csv"
    if not path.exists():
        raise DataError(f"{path} is missing: the run measured no held-out loss (training.heldout_windows: 0?)")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DataError(f"{path} has no measurement")
    return rows


def heldout_row_loss(row: dict, domains: list[str], path: Path) -> np.ndarray:
    missing = [d for d in domains if f"val_loss/{d}" not in row]
    if missing:
        raise DataError(f"{path} has no held-out loss for {missing}")
    return np.array([float(row[f"val_loss/{d}"]) for d in domains])


def final_heldout_loss(run_dir: Path, domains: list[str], rows: list[dict] | None = None) -> np.ndarray:
    """The held-out loss per domain after a run's last step: the last row of its val.csv (``rows``,
    where they are read already), which the loop always measures after the last step (models/heldout.py)."""
    last = (rows or heldout_rows(run_dir))[-1]
    steps = RunRecord.read(run_dir / "run.json").steps
    if int(last["step"]) != steps:
        raise DataError(f"{run_dir / 'val.csv'}: the last measurement is at step {last['step']}, not the run's last "
                        f"step {steps}")
    return heldout_row_loss(last, domains, run_dir / "val.csv")


def upstream_heldout_losses(upstream: dict[str, Path], domains: list[str]) -> tuple[dict, dict]:
    """({stage: held-out loss per domain after the last step}, {stage: before the first step}) of
    the upstream runs, each val.csv read once; the second only for runs whose val.csv starts with
    a step-0 row (``Strategy.heldout_before_training``)."""
    final, initial = {}, {}
    for stage, run_dir in upstream.items():
        rows = heldout_rows(run_dir)
        final[stage] = final_heldout_loss(run_dir, domains, rows)
        if int(rows[0]["step"]) == 0:
            initial[stage] = heldout_row_loss(rows[0], domains, run_dir / "val.csv")
    return final, initial


def strategy_context(config: dict, run: Run, total_steps: int, upstream: dict[str, Path], *,
                     heldout: bool = False) -> StrategyContext:
    """The context of one run. ``heldout`` reads the upstream runs' final held-out losses too
    (what a ``fit`` stage fits on)."""
    data_dir = Path(config["data_dir"])
    domains = list(config["corpus"]["domains"])
    final, initial = upstream_heldout_losses(upstream, domains) if heldout else ({}, {})
    store = TokenStore(data_dir / "tokens", "train", domains)
    check_upstream_data(data_dir, upstream)
    return StrategyContext(
        name=run.strategy, domains=tuple(domains), train_tokens=uncapped_train_tokens(data_dir, domains),
        stage=str(run.stage), total_steps=total_steps, seed=run.seed, vocab_size=store.vocab_size,
        warmup_steps=config["training"]["warmup_steps"], replica=run.stage.replica,
        available_tokens=store.token_counts().astype(np.float64),
        planned_tokens=planned_tokens(total_steps, config["training"]["batch_size"], config["training"]["seq_len"]),
        upstream_weights={s: np.asarray(read_json(d / "weights.json")["final_weights"]) for s, d in upstream.items()},
        upstream_heldout=final, upstream_heldout_initial=initial,
    )
