"""The README's result tables and the sentences about them, written from the result tables.

    python -m eval.analysis.readme_results --config config/config.yaml [--readme README.md] [--check]
    python -m eval.analysis.readme_results --config config/landscape.yaml --readme docs/landscape.md

Replaces what lies between ``<!-- results:begin -->`` and ``<!-- results:end -->`` in the README
with the bits per byte of every strategy, its comparison with the baseline, and sentences worded
from the Holm-adjusted p-values and t-intervals of ``comparison.csv`` (eval/analysis/stats.py): a
difference is called better or worse only where its adjusted p is below 0.05, and otherwise the
text says what the seeds could and could not show. ``--check`` changes nothing and exits 1 if the
README says something else than the tables. With the landscape study's config the block is its
regret table and what it supports (eval/analysis/landscape.py), written into docs/landscape.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from eval.analysis.landscape import regret_markdown, regret_note
from eval.analysis.partial import read_table
from eval.analysis.stats import ALPHA, smallest_p
from eval.analysis.tables import baseline_of, compute_table, mean_std_cells, per_seed
from eval.metrics import PRIMARY
from mixbench.cli import add_config_argument, main_guard
from mixbench.errors import DataError
from mixbench.io import write_text
from strategies import grid_config

BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
METRIC = PRIMARY.label  # the comparison rows of the held-out metric (eval/metrics.py)


def markdown_table(frame: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in frame.itertuples(index=False)]
    return "\n".join(lines)


def results_block(config: dict) -> str:
    tables = Path(config["results_dir"]) / "tables"
    if config.get("landscape") is not None:  # the landscape study's block, for docs/landscape.md
        return landscape_block(tables)
    grid, base = config["grid"], baseline_of(config["grid"])
    size = grid["sizes"][0]
    try:
        # Without an unfinished grid's rows of missing cells (eval/analysis/partial.py).
        perplexity = read_table(tables / "perplexity.csv")[0]
        comparison = read_table(tables / "comparison.csv")[0]
        compute = read_table(tables / "compute.csv")[0]
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename} is missing: build the tables first (snakemake --cores 1 tables)") from None
    wide = per_seed(perplexity[perplexity["size"] == size], PRIMARY.column, "domain", summaries=True)
    cells = mean_std_cells(wide, {**grid, "sizes": [size]}, ".3f").drop(columns="size")
    rows = comparison[comparison["size"] == size]
    macro, worst = (rows[rows["metric"] == f"{METRIC}, {s}"].set_index("strategy") for s in ("macro avg", "worst"))
    times = compute_table(compute[compute["size"] == size], {**grid, "sizes": [size]}).set_index("strategy")
    summary = pd.DataFrame([{
        "strategy": s,
        "Δ macro avg [95% t-interval]": f"{macro.at[s, 'difference']:+.3f} [{macro.at[s, 'ci_low']:+.3f}, "
                                        f"{macro.at[s, 'ci_high']:+.3f}]",
        "p (Holm)": f"{macro.at[s, 'p_holm']:.2f}",
        "wins": f"{int(macro.at[s, 'wins'])} of {int(macro.at[s, 'items'])}",
        "Δ worst domain": f"{worst.at[s, 'difference']:+.3f}",
        "seeds needed": "" if pd.isna(macro.at[s, "seeds_needed"]) else f"{int(macro.at[s, 'seeds_needed'])}",
        "compute × uniform": times.at[s, "× baseline"] if "× baseline" in times else "",
    } for s in grid["strategies"] if s in macro.index])
    n, m = int(macro["pairs"].min()), int(macro["comparisons"].max())
    return "\n\n".join([
        f"Bits per byte on the held-out test split (size {size}; mean ± std over {n} seeds; lower is better):",
        markdown_table(cells),
        f"Against {base} on the same seeds (`{tables / 'comparison.md'}`: the macro average's mean difference, "
        f"its paired t 95% interval, the sign-flip p Holm-adjusted over the {m} strategies, domains won, the "
        f"worst domain's difference, and the seeds at which the observed difference would be detected with "
        f"80% power):",
        markdown_table(summary),
        verdict_sentences(macro, base, n, m) + downstream_sentence(rows, base),
        *mixture_sentence(tables / "weights.csv", size),
    ])


def landscape_block(tables: Path) -> str:
    """The landscape study's result block for docs/landscape.md (``--config config/landscape.yaml
    --readme docs/landscape.md``): the regret table and what it supports, worded from
    landscape.csv and lattice.csv alone (eval/analysis/landscape.py writes them)."""
    try:
        frame, lattice_frame = (read_table(tables / f"{name}.csv")[0] for name in ("landscape", "lattice"))
    except FileNotFoundError as exc:
        raise DataError(f"{exc.filename} is missing: build the tables first (snakemake --cores 1 tables)") from None
    if frame.empty:
        raise DataError(f"{tables / 'landscape.csv'} holds no regret yet: finish the study first")
    table = markdown_table(regret_markdown(frame).drop(columns="size"))
    significant = frame[frame["p_holm"] < ALPHA]
    if significant.empty:
        verdict_text = "No regret is significant after Holm"
        if smallest_p(int(frame["pairs"].min())) * int(frame["comparisons"].max()) >= ALPHA:
            verdict_text += f", and with {int(frame['pairs'].min())} seeds none could be"
        verdict_text += "."
    else:
        verdict_text = "Significant after Holm: " + ", ".join(
            f"{s} (regret {r:+.3f}, adjusted p {p:.3g})"
            for s, r, p in zip(significant["strategy"], significant["regret"], significant["p_holm"])) + "."
    away = frame[frame["ci_low"] > 0]
    interval_text = (" The t-intervals of " + ", ".join(away["strategy"]) + " lie above zero (regret on every "
                     "reading that assumes normal per-seed differences)." if len(away) else
                     " Every t-interval includes zero.")
    best = frame.loc[frame["regret"].idxmin()]
    ranked = (f" Lowest mean regret: {best['strategy']} ({best['regret']:+.3f}, mean rank {best['mean_rank']:.1f} "
              f"of {int(best['points'])} lattice mixtures).")
    return "\n\n".join([regret_note(frame, lattice_frame), table, verdict_text + interval_text + ranked])


def mixture_sentence(path: Path, size: str) -> list[str]:
    """Each learned mixture's largest mean weight (a mixture the same on every seed is a fixed one
    and is left out), from the mixtures the final models trained on."""
    if not path.exists():
        return []
    weights = read_table(path)[0]
    by_cell = weights[weights["size"] == size].groupby(["strategy", "domain"], sort=False)["weight"]
    means, spread = by_cell.mean(), by_cell.std(ddof=0).groupby(level="strategy", sort=False).max()
    parts = []
    for strategy, group in means.groupby(level="strategy", sort=False):
        if spread[strategy] == 0:
            continue
        domain = group.idxmax()[1]
        parts.append(f"{strategy} {group.max():.2f} on {domain}")
    return [f"Largest weight of each learned final mixture (mean over seeds; `{path.with_suffix('.md')}`): "
            + "; ".join(parts) + "."] if parts else []


def downstream_sentence(rows: pd.DataFrame, base: str) -> str:
    """The spread of each downstream task's macro average over strategies, and how many of its
    differences from the baseline are significant after Holm."""
    tasks = rows[rows["metric"].str.endswith(", macro avg") & ~rows["metric"].str.startswith(METRIC)]
    parts = []
    for metric, group in tasks.groupby("metric", sort=False):
        values = [group["baseline_mean"].iloc[0], *group["strategy_mean"]]
        significant = int((group["p_holm"] < ALPHA).sum())
        parts.append(f"{metric.removesuffix(', macro avg')} {min(values):.3f}–{max(values):.3f} "
                     f"({significant} of {len(group)} differences from {base} significant)")
    return (" Downstream, macro averages over domains across strategies: " + "; ".join(parts) + ".") if parts else ""


def verdict_sentences(macro: pd.DataFrame, base: str, pairs: int, comparisons: int) -> str:
    """What the comparison supports, in words, from the adjusted p-values and intervals."""
    significant = macro[macro["p_holm"] < ALPHA]
    floor = smallest_p(pairs) * comparisons
    if significant.empty and floor >= ALPHA:
        text = (f"No difference from {base} is significant, and none could be: with {pairs} seeds the smallest "
                f"possible sign-flip p is {smallest_p(pairs):.3g}, {min(1.0, floor):.3g} after Holm over "
                f"{comparisons} strategies.")
    elif significant.empty:
        text = f"No difference from {base} is significant (every Holm-adjusted p is at least {ALPHA})."
    else:
        named = ", ".join(f"{s} ({'lower' if d < 0 else 'higher'} by {abs(d):.3f}, adjusted p {p:.3g})"
                          for s, d, p in zip(significant.index, significant["difference"], significant["p_holm"]))
        text = f"Significantly different from {base} after Holm: {named}; the rest are not."
    away = macro[(macro["ci_low"] > 0) | (macro["ci_high"] < 0)]
    if len(away) and len(significant) < len(macro):
        text += (" The t-intervals of " + ", ".join(away.index) + " exclude zero, but with so few seeds that "
                 "rests on the normality the t-interval assumes, which the sign-flip test does not.")
    largest = macro["difference"].abs().idxmax()
    needed = macro.at[largest, "seeds_needed"]
    if not pd.isna(needed):
        text += (f" The largest difference, {largest}'s {macro.at[largest, 'difference']:+.3f}, would need about "
                 f"{int(needed)} seeds to be detected with 80% power at its observed spread.")
    return text


def replace_block(readme: str, block: str) -> str:
    if readme.count(BEGIN) != 1 or readme.count(END) != 1:
        raise DataError(f"the README must hold one {BEGIN} and one {END}")
    head, rest = readme.split(BEGIN)
    return head + BEGIN + "\n" + block + "\n" + END + rest.split(END, 1)[1]


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--readme", type=Path, default=Path("README.md"))
    parser.add_argument("--check", action="store_true", help="exit 1 if the README differs from the tables")
    args = parser.parse_args(argv)
    readme = args.readme.read_text(encoding="utf-8")
    updated = replace_block(readme, results_block(grid_config.load(*args.config)))
    if args.check:
        if updated != readme:
            print(f"{args.readme}: its results differ from the tables; run without --check to rewrite them",
                  file=sys.stderr)
            return 1
        return 0
    write_text(args.readme, updated)
    return 0


if __name__ == "__main__":
    sys.exit(main())
