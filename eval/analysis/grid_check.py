"""Which runs and evaluations of the grid the tables may read: each is checked against the
current config and data before a number of it reaches a table (mixbench/lineage.py).

A run is read only where its folder lies inside ``runs_dir`` (not a link to a run elsewhere),
its run.json records the current config's fingerprint of the run (``fingerprint`` and
``inputs.config``), the current token files and tokenizer (``inputs.tokens``/``tokenizer``) and
the run.json digests of the runs before it as they are now (``inputs.upstream``), its steps are
the config's, and its own ``train.log`` is there (a run without it did not finish). An evaluation is read only where it records the digest of its final run's run.json
as it is now (``lineage.run``) and the tokenizer the run trained with (``lineage.tokenizer``). Anything else is a run of another grid, of other data, or one
made before runs recorded their inputs, whatever Snakemake knows of it.

A cell (size, strategy, seed) is in the tables only when every run it needs and its
evaluations pass; otherwise it is missing: ``GridCheck.lines`` says, one line per run or
evaluation, which folder and why, and ``GridCheck.missing`` names each missing cell for the
tables' and figures' notes. Torch-free and pandas-free: the workflow imports it while parsed.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from mixbench import config as cfg
from mixbench.errors import DataError
from mixbench.io import read_json
from mixbench.lineage import RUN_FILE, TRAINING_LOG, run_digest
from models.run_inputs import chain_fingerprint, data_inputs
from models.run_record import RunRecord
from strategies.runs import cell_runs, landscape_runs, run_chain

Cell = tuple[str, str, int]  # (final size, strategy, seed)


@dataclass
class GridCheck:
    """The outcome of ``check_grid``: the cells the tables read, in grid order, and the rest."""
    kept: list[Cell]
    missing: dict[Cell, str] = field(default_factory=dict)  # cell -> why, in a few words
    lines: list[str] = field(default_factory=list)  # one per run or evaluation not read: folder and why

    def report(self, stream=None) -> None:
        """Every line of ``lines`` on stderr (the tables job's log)."""
        for line in self.lines:
            print(line, file=stream or sys.stderr, flush=True)


def cell_name(cell: Cell) -> str:
    size, strategy, seed = cell
    return f"{size}/{strategy}/seed{seed}"


def all_cells(config: dict) -> list[Cell]:
    """Every cell of the grid, in grid order (sizes, strategies, seeds)."""
    return [(size, strategy, seed) for size in config["grid"]["sizes"] for strategy in config["grid"]["strategies"]
            for seed in config["grid"]["seeds"]]


def evaluation_files(config: dict) -> list[str]:
    """The files an evaluation of a final model writes under its ``eval/``."""
    return ["perplexity.json"] + (["downstream.json"] if config["downstream"]["tasks"] else [])


def check_grid(config: dict) -> GridCheck:
    """Every cell of the grid checked: its runs (each shared one once) and its evaluations."""
    checker = _Checker(config)
    check = GridCheck(kept=[])
    for cell in all_cells(config):
        why = checker.cell(cell)
        if why is None:
            check.kept.append(cell)
        else:
            check.missing[cell] = why
    check.lines = checker.lines
    return check


def finished_files(config: dict) -> list[Path]:
    """Every run.json, train.log and evaluation file of the grid that exists: what the tables read
    of an unfinished grid (rules/results.smk digests their sizes and times)."""
    runs: dict[Path, None] = {}
    files = []
    for size, strategy, seed in all_cells(config):
        for stage, spec in cell_runs(config, size, strategy).items():
            runs[Path(cfg.run_dir(config, spec["size"], strategy, seed, stage))] = None
        final = Path(cfg.run_dir(config, size, strategy, seed, "final"))
        files += [final / "eval" / name for name in evaluation_files(config)]
    for *_, folder in landscape_runs(config):  # the lattice's runs and their scores (rules/landscape.smk)
        runs[Path(folder)] = None
        files.append(Path(folder) / "eval" / "perplexity.json")
    files = [path for folder in runs for path in (folder / RUN_FILE, folder / TRAINING_LOG)] + files
    return [path for path in files if path.is_file()]


def files_state(paths: list[Path]) -> str:
    """A digest of the paths with each file's size and modification time: it changes when a run
    finishes or is rewritten."""
    text = "\n".join(f"{path}\t{os.stat(path).st_size}\t{os.stat(path).st_mtime_ns}" for path in paths)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _short(digest) -> str:
    return f"{digest[:12]}.." if isinstance(digest, str) else "(none)"


class _Checker:
    def __init__(self, config: dict):
        self.config = config
        self.runs_root = Path(config["runs_dir"]).resolve()
        self.lines: list[str] = []
        self._runs: dict[Path, str | None] = {}  # folder -> why it is not read (None: read)
        self._data: dict | None = None

    def data(self) -> dict:
        """The current token files' and tokenizer's digests; DataError naming the missing file."""
        if self._data is None:
            try:
                self._data = data_inputs(self.config["data_dir"])
            except DataError as exc:
                raise DataError(f"{exc}; without the data no run in {self.config['runs_dir']} can be checked "
                                "against what it was trained on: build it with `snakemake --cores all "
                                "tokenize_corpus` (and the grid's --configfile)") from None
        return self._data

    def cell(self, cell: Cell) -> str | None:
        """Why the cell is missing (its first run or evaluation not read), or None. Every run of the
        cell is checked, so each one's line is said; its evaluations once its final run is read."""
        size, strategy, seed = cell
        whys = []
        for stage, spec in cell_runs(self.config, size, strategy).items():
            folder = Path(cfg.run_dir(self.config, spec["size"], strategy, seed, stage))
            if folder not in self._runs:
                self._runs[folder] = self.run(folder, strategy, stage, spec["size"], seed)
            if self._runs[folder] is not None:
                whys.append(f"{stage}: {self._runs[folder]}")
        final = Path(cfg.run_dir(self.config, size, strategy, seed, "final"))
        if self._runs[final] is None:
            for name in evaluation_files(self.config):
                why = self.evaluation(final / "eval" / name, final)
                if why is not None:
                    whys.append(f"{name}: {why}")
        return whys[0] if whys else None

    def say(self, path: Path, why: str, finished: bool = True) -> str:
        """Says the line of ``path`` and returns its first reason (a cell's note in the tables)."""
        self.lines.append(f"{'left out' if finished else 'missing'} {path}: {why}")
        return why.split("; ")[0] if not finished else f"left out, {why.split('; ')[0]}"

    def outside(self, path: Path) -> str | None:
        resolved = path.resolve()
        if not resolved.is_relative_to(self.runs_root):
            return f"a link to {resolved}, outside runs_dir {self.runs_root}: not a run of this grid"
        return None

    def run(self, folder: Path, strategy: str, stage: str, size: str, seed: int) -> str | None:
        """Why the run in ``folder`` is not read (its line said), or None."""
        if not (folder / RUN_FILE).is_file():
            return self.say(folder, f"not finished (no {RUN_FILE})", finished=False)
        if (why := self.outside(folder) or self.outside(folder / RUN_FILE)) is not None:
            return self.say(folder, why)
        try:
            record = RunRecord.read(folder / RUN_FILE)
        except (DataError, ValueError) as exc:
            return self.say(folder, f"unreadable run.json ({exc})")
        rerun = (f"rerun it with `snakemake --cores all --forcerun {folder / RUN_FILE}` (and the grid's "
                 f"--configfile), or delete {folder}")
        if record.inputs is None:
            return self.say(folder, f"made before runs recorded their inputs; {rerun}")
        chain = run_chain(self.config, strategy, stage, size)
        trains = cfg.Stage.parse(stage).trains
        expected = chain_fingerprint(self.config, cfg.Run(strategy=strategy, stage=stage, size=size, seed=seed), chain)
        problems = []
        # A fit stage records its fingerprint in its inputs alone.
        recorded = {record.inputs.get("config")} | ({record.fingerprint} if trains or record.fingerprint else set())
        if recorded != {expected}:
            there = next((r for r in recorded if r != expected), None)
            problems.append(f"made by another config (fingerprint {_short(there)} there, {_short(expected)} here)")
        if trains and record.steps != chain[stage]["steps"]:
            problems.append(f"trained {record.steps} steps, the config asks for {chain[stage]['steps']}")
        for name, digest in self.data().items():
            if record.inputs.get(name) != digest:
                problems.append(f"made from other {name} ({_short(record.inputs.get(name))} there, "
                                f"{_short(digest)} here)")
        upstream = record.inputs.get("upstream") or {}
        for before, spec in chain.items():
            if before == stage:
                continue
            path = Path(cfg.run_dir(self.config, spec["size"], strategy, seed, before))
            now = run_digest(path) if (path / RUN_FILE).is_file() else None
            if upstream.get(before) != now:
                problems.append(f"made from another {before} run ({_short(upstream.get(before))} there, "
                                f"{_short(now)} here)")
        if not (folder / TRAINING_LOG).is_file():  # a fit's job writes one too (mixbench/training_log.py)
            problems.append(f"incomplete: no {TRAINING_LOG} (a finished run writes its own log)")
        if problems:
            return self.say(folder, "; ".join(problems) + f"; {rerun}")
        return None

    def evaluation(self, path: Path, final: Path) -> str | None:
        """Why the evaluation file ``path`` of the final run in ``final`` is not read, or None."""
        if not path.is_file():
            return self.say(path, "not evaluated yet", finished=False)
        if (why := self.outside(path)) is not None:
            return self.say(path, why)
        try:
            lineage = read_json(path).get("lineage") or {}
        except (ValueError, AttributeError) as exc:
            return self.say(path, f"unreadable ({exc})")
        rerun = f"rerun it with `snakemake --cores all --forcerun {path}` (and the grid's --configfile), or delete it"
        if "run" not in lineage:
            return self.say(path, f"made before evaluations recorded the run they scored; {rerun}")
        now = run_digest(final)
        if lineage["run"] != now:
            return self.say(path, f"scored another run ({_short(lineage['run'])} there, run.json {_short(now)} "
                                  f"here); {rerun}")
        trained_with = (RunRecord.read(final / RUN_FILE).inputs or {}).get("tokenizer")
        if lineage.get("tokenizer") != trained_with:  # the evaluation job refuses this; a copied file may not
            return self.say(path, f"scored with another tokenizer ({_short(lineage.get('tokenizer'))} there, the run "
                                  f"trained with {_short(trained_with)}); {rerun}")
        return None


def missing_note(missing: dict[Cell, str], cells: int) -> str | None:
    """The line the tables and figures of an unfinished grid carry: each missing cell and why
    (None when no cell is missing)."""
    if not missing:
        return None
    return (f"Missing cells ({len(missing)} of {cells}; not finished, or left out as the tables job's log says): "
            + "; ".join(f"{cell_name(cell)} ({why})" for cell, why in missing.items()))
