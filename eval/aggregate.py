"""Collect finished runs into tables.

    python -m eval.aggregate --config config/config.yaml

Reads every grid cell's runs and writes to ``{results_dir}/tables/``: ``perplexity.csv``
(long format: one row per size, strategy, seed and domain, with provenance columns) and
``perplexity.md`` (mean ± std over seeds per strategy
and domain, with the macro average over domains and the worst domain). ``perplexity`` is
lm-eval's word perplexity; ``bits_per_byte`` is the tokenizer-independent number to compare.
``weights.csv``/``.md`` give the mixture each final model trained on (size, strategy, seed,
domain, weight) and ``trajectories.csv`` every traced weight vector of every stage (e.g.
DoReMi's proxy α per step).
"""

from __future__ import annotations

import json
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


def grid_cells(config: dict):
    """(size, strategy, seed, folder of the run) for every cell of the grid, in grid order."""
    for size in config["grid"]["sizes"]:
        for strategy in config["grid"]["strategies"]:
            for seed in config["grid"]["seeds"]:
                yield size, strategy, seed, Path(config["runs_dir"]) / size / strategy / f"seed{seed}"


def collect(config: dict) -> pd.DataFrame:
    rows = []
    for size, strategy, seed, cell in grid_cells(config):
        rows += run_rows(cell / "final", size, strategy, seed, config["corpus"]["domains"])
    return pd.DataFrame(rows)


def collect_weights(config: dict) -> pd.DataFrame:
    """The mixture each final model trained on (for static runs: the mean over steps)."""
    rows = []
    for size, strategy, seed, cell in grid_cells(config):
        weights = read_json(cell / "final" / "weights.json")
        provenance = {key: read_json(cell / "final" / "run.json")[key] for key in PROVENANCE}
        rows += [{"size": size, "strategy": strategy, "seed": seed, "domain": d, "weight": w, **provenance}
                 for d, w in zip(weights["domains"], weights["final_weights"])]
    return pd.DataFrame(rows)


def collect_trajectories(config: dict) -> pd.DataFrame:
    """Every traced weight vector (``alpha`` in a stage's trace.jsonl: DoReMi's proxy, ...)."""
    from mixbench.config import strategy_class_name, strategy_hparams
    from strategies import get_strategy_class

    rows = []
    domains = config["corpus"]["domains"]
    for size, strategy, seed, cell in grid_cells(config):
        cls = get_strategy_class(strategy_class_name(config, strategy))
        for stage in cls.stages_for({**cls.defaults, **strategy_hparams(config, strategy)}):
            path = cell / stage / "trace.jsonl"
            if not path.exists():
                continue
            for line in path.read_text(encoding="utf-8").splitlines():
                record = json.loads(line)
                if "alpha" in record:
                    rows += [{"size": size, "strategy": strategy, "seed": seed, "stage": stage,
                              "step": record["step"], "domain": d, "weight": w}
                             for d, w in zip(domains, record["alpha"])]
    return pd.DataFrame(rows, columns=["size", "strategy", "seed", "stage", "step", "domain", "weight"])


def mean_std_table(long: pd.DataFrame, metric: str, grid: dict, summaries: bool = True,
                   fmt: str = ".4f") -> pd.DataFrame:
    """Rows (size, strategy) in grid order; columns the domains (and, with ``summaries``, the
    macro average and the worst domain); cells 'mean ± std' over seeds (the mean for one seed)."""
    per_seed = long.pivot_table(index=["size", "strategy", "seed"], columns="domain", values=metric)
    per_seed = per_seed[list(dict.fromkeys(long["domain"]))]  # domains in corpus order
    domains = list(per_seed.columns)
    if summaries:
        per_seed["macro avg"] = per_seed[domains].mean(axis=1)  # unweighted mean over domains, per seed
        per_seed["worst"] = per_seed[domains].max(axis=1)  # the worst domain's value, per seed
    grouped = per_seed.groupby(level=["size", "strategy"])
    mean, std = grouped.mean(), grouped.std(ddof=1)
    cells = mean.map(lambda m: format(m, fmt))
    if len(grid["seeds"]) > 1:
        cells = cells + " ± " + std.map(lambda s: format(s, fmt))
    order = pd.MultiIndex.from_product([grid["sizes"], grid["strategies"]], names=["size", "strategy"])
    return cells.reindex(order).reset_index()


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False)


def write_tables(long: pd.DataFrame, weights: pd.DataFrame, trajectories: pd.DataFrame, out_dir: Path,
                 grid: dict) -> None:
    write_csv(long, out_dir / "perplexity.csv")
    write_csv(weights, out_dir / "weights.csv")
    write_csv(trajectories, out_dir / "trajectories.csv")
    n_seeds = len(grid["seeds"])
    spread = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "one seed"
    sections = []
    # Word perplexities of a tiny model span 1e3 to 1e9 across domains: significant digits, not decimals.
    for metric, label, fmt in (("bits_per_byte", "Bits per byte", ".4f"), ("perplexity", "Word perplexity", ".4g")):
        table = mean_std_table(long, metric, grid, fmt=fmt)
        sections.append(f"## {label} on the held-out test split ({spread}; lower is better)\n\n"
                        + table.to_markdown(index=False, disable_numparse=True))
    write_text(out_dir / "perplexity.md", "\n\n".join(sections) + "\n")
    table = mean_std_table(weights, "weight", grid, summaries=False)
    write_text(out_dir / "weights.md", f"## Mixture the final model trained on ({spread})\n\n"
               + table.to_markdown(index=False, disable_numparse=True) + "\n")


def aggregate(config: dict) -> None:
    long = collect(config)
    out = Path(config["results_dir"]) / "tables"
    write_tables(long, collect_weights(config), collect_trajectories(config), out, config["grid"])
    print(f"wrote {len(long)} rows to {out}", flush=True)


main = config_command(aggregate, __doc__)


if __name__ == "__main__":
    main()
