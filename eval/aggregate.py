"""Collect finished runs into tables.

    python -m eval.aggregate --config config/config.yaml

Reads every grid cell's ``final/run.json`` and ``final/eval/perplexity.json`` and writes
``{results_dir}/tables/perplexity.csv`` (long format: one row per size, strategy, seed and
domain, with provenance columns) and ``perplexity.md`` (mean ± std over seeds per strategy
and domain, with the macro average over domains and the worst domain). ``perplexity`` is
lm-eval's word perplexity; ``bits_per_byte`` is the tokenizer-independent number to compare.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mixbench.cli import config_command
from mixbench.errors import DataError
from mixbench.io import atomic_path, read_json, write_text

METRICS = {"bits_per_byte": "bits_per_byte", "perplexity": "word_perplexity", "byte_perplexity": "byte_perplexity"}
PROVENANCE = ("config_hash", "git_commit")


def run_rows(run_dir: Path, size: str, strategy: str, seed: int, domains: list[str]) -> list[dict]:
    run_file, eval_file = run_dir / "run.json", run_dir / "eval" / "perplexity.json"
    for path in (run_file, eval_file):
        if not path.exists():
            raise DataError(f"{path} is missing: run `snakemake --cores all` to finish the grid first")
    run, results = read_json(run_file), read_json(eval_file)
    provenance = {key: run[key] for key in PROVENANCE}
    provenance.update({f"{pkg}_version": v for pkg, v in run["versions"].items() if pkg in ("torch", "transformers", "lm_eval")})
    rows = []
    missing = [d for d in domains if d not in results["tasks"]]
    if missing:
        raise DataError(f"{eval_file} has no result for domain(s) {missing}; rerun its evaluation")
    for domain in domains:  # corpus order, which every table keeps
        metrics = results["tasks"][domain]
        row = {"size": size, "strategy": strategy, "seed": seed, "domain": domain}
        row.update({column: metrics[key] for column, key in METRICS.items()})
        rows.append({**row, **provenance})
    return rows


def collect(config: dict) -> pd.DataFrame:
    rows = []
    for size in config["grid"]["sizes"]:
        for strategy in config["grid"]["strategies"]:
            for seed in config["grid"]["seeds"]:
                run_dir = Path(config["runs_dir"]) / size / strategy / f"seed{seed}" / "final"
                rows += run_rows(run_dir, size, strategy, seed, config["corpus"]["domains"])
    return pd.DataFrame(rows)


def mean_std_table(long: pd.DataFrame, metric: str, grid: dict) -> pd.DataFrame:
    """Rows (size, strategy) in grid order; columns the domains, the macro average and the
    worst domain; cells 'mean ± std' over seeds (just the mean when there is one seed)."""
    per_seed = long.pivot_table(index=["size", "strategy", "seed"], columns="domain", values=metric)
    per_seed = per_seed[list(dict.fromkeys(long["domain"]))]  # domains in corpus order
    domains = list(per_seed.columns)
    per_seed["macro avg"] = per_seed[domains].mean(axis=1)  # unweighted mean over domains, per seed
    per_seed["worst"] = per_seed[domains].max(axis=1)  # the worst domain's value, per seed
    grouped = per_seed.groupby(level=["size", "strategy"])
    mean, std = grouped.mean(), grouped.std(ddof=1)
    cells = mean.map(lambda m: f"{m:.4f}")
    if len(grid["seeds"]) > 1:
        cells = cells + " ± " + std.map(lambda s: f"{s:.4f}")
    order = pd.MultiIndex.from_product([grid["sizes"], grid["strategies"]], names=["size", "strategy"])
    return cells.reindex(order).reset_index()


def write_tables(long: pd.DataFrame, out_dir: Path, grid: dict) -> None:
    with atomic_path(out_dir / "perplexity.csv") as tmp:
        long.to_csv(tmp, index=False)
    n_seeds = len(grid["seeds"])
    spread = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    sections = []
    for metric, label in (("bits_per_byte", "Bits per byte"), ("perplexity", "Word perplexity")):
        table = mean_std_table(long, metric, grid)
        sections.append(f"## {label} on the held-out test split ({spread}; lower is better)\n\n"
                        + table.to_markdown(index=False, disable_numparse=True))
    write_text(out_dir / "perplexity.md", "\n\n".join(sections) + "\n")


def aggregate(config: dict) -> None:
    long = collect(config)
    write_tables(long, Path(config["results_dir"]) / "tables", config["grid"])
    print(f"wrote {len(long)} rows to {config['results_dir']}/tables", flush=True)


main = config_command(aggregate, __doc__)


if __name__ == "__main__":
    main()
