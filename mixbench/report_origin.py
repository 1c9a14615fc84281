"""Which config the results were made with, for ``snakemake --report``.

The report shows the tables and figures of the config Snakemake is given, and without the grid's
``--configfile`` that is config/config.yaml, whose files the results folder may not hold. The
workflow then stops with one line naming the config the results come from (``report_problem``)
instead of Snakemake's warnings about each missing file.

The workflow stores every config it runs as ``{runs_dir}/configs/{config_hash}.yaml``, headed by
the files it was read from (``stored_config_text``); every table row names the ``config_hash`` of
its run (eval/analysis/collect.py).
"""

from __future__ import annotations

import csv
import shlex
from collections import Counter
from itertools import islice
from pathlib import Path

import yaml

FROM_HEADER = "# The validated config read from: "
ROWS_READ = 1000  # per table: enough to name the configs in it


def stored_config_text(config: dict, config_files: list[str]) -> str:
    """The stored copy of a config: its files (a comment, so the copy reads back as the config) and the config."""
    return FROM_HEADER + " ".join(map(str, config_files)) + "\n" + yaml.safe_dump(config, sort_keys=False)


def stored_from(stored: Path) -> str | None:
    """The config files a stored copy was read from (None: a copy without the header)."""
    with open(stored, encoding="utf-8") as f:
        first = f.readline().rstrip("\n")
    return first[len(FROM_HEADER):] if first.startswith(FROM_HEADER) else None


def results_config_hashes(results_dir: str | Path) -> list[str]:
    """The config hashes the tables in ``results_dir`` name, the most frequent first."""
    seen: Counter = Counter()
    for table in sorted(Path(results_dir, "tables").glob("*.csv")):
        with open(table, newline="", encoding="utf-8") as f:
            rows = csv.DictReader(f)
            if "config_hash" in (rows.fieldnames or ()):
                seen.update(row["config_hash"] for row in islice(rows, ROWS_READ) if row["config_hash"])
    return [config_hash for config_hash, _ in seen.most_common()]


def report_problem(config: dict, config_hash: str, config_files: list[str], report: str,
                   missing: list[str], needed: int) -> str | None:
    """One line when the report of ``config`` cannot be made (``missing`` of its ``needed``
    files are not there), naming the config the results were made with; None when nothing is missing."""
    if not missing:
        return None
    results, given = config["results_dir"], " ".join(map(str, config_files))
    lacks = (f"{results}/ lacks {len(missing)} of the {needed} tables and figures of config {given} "
             f"(first: {missing[0]})")
    others = [h for h in results_config_hashes(results) if h != config_hash]
    if not others:
        return (f"{lacks}, and holds no results of another config; finish the grid first (snakemake --cores all "
                f"--configfile {given}), or pass the config the results were made with: snakemake --report "
                f"{shlex.quote(report)} --configfile FILE")
    stored = Path(config["runs_dir"]) / "configs" / f"{others[0]}.yaml"
    if not stored.exists():
        return (f"{lacks}; the results in {results}/ were made with another config (config_hash {others[0]}); "
                f"run: snakemake --report {shlex.quote(report)} --configfile FILE, with that config's FILE")
    origin = stored_from(stored) or str(stored)
    return (f"{lacks}; the results in {results}/ were made with config {origin} (stored as {stored}); "
            f"run: snakemake --report {shlex.quote(report)} --configfile {origin}")


def requested_report(argv: list[str]) -> str | None:
    """The report path of a ``snakemake --report PATH`` command line (None: not a report run)."""
    for position, arg in enumerate(argv):
        if arg.startswith("--report="):
            return arg.split("=", 1)[1]
        if arg == "--report":
            following = argv[position + 1] if position + 1 < len(argv) else ""
            return following if following and not following.startswith("-") else "report.html"
    return None
