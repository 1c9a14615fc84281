"""Summary tables from the long result frames: mean ± std over seeds, paired comparisons with the
baseline strategy, compute. Each table is written as Markdown and LaTeX (the long CSVs are the
machine-readable form)."""

from __future__ import annotations

from html import escape
from pathlib import Path

import numpy as np
import pandas as pd

from eval.analysis.stats import ALPHA, holm, paired_test, seeds_needed, smallest_p, wins
from mixbench.config import Stage
from mixbench.io import write_text
from strategies.base import STAGE_ORDER

KEYS = ["size", "strategy"]


def baseline_of(grid: dict) -> str:
    """Every strategy is compared with uniform, or with the grid's first strategy without it."""
    return "uniform" if "uniform" in grid["strategies"] else grid["strategies"][0]


def spread_label(grid: dict) -> str:
    n = len(grid["seeds"])
    return f"mean ± std over {n} seeds" if n > 1 else "one seed"


def per_seed(long: pd.DataFrame, value: str, column: str, summaries: bool, higher_is_better: bool = False) -> pd.DataFrame:
    """Index (size, strategy, seed); one column per ``column`` value in first-seen order, and
    with ``summaries`` the macro average over them and the worst of them, per seed."""
    wide = long.pivot_table(index=[*KEYS, "seed"], columns=column, values=value, sort=False)
    wide = wide[list(dict.fromkeys(long[column]))]
    items = list(wide.columns)
    if summaries:
        wide["macro avg"] = wide[items].mean(axis=1)  # unweighted: every domain counts the same
        wide["worst"] = wide[items].min(axis=1) if higher_is_better else wide[items].max(axis=1)
    return wide


def mean_std_cells(wide: pd.DataFrame, grid: dict, fmt: str) -> pd.DataFrame:
    """'mean ± std' over seeds per (size, strategy), rows in grid order; over fewer seeds than the
    grid's (an unfinished grid) the cell says over how many, and without any it is '—'."""
    grouped = wide.groupby(level=KEYS, sort=False)
    mean, std, count = grouped.mean(), grouped.std(ddof=1), grouped.count()
    cells = mean.map(lambda m: format(m, fmt))
    seeds = len(grid["seeds"])
    if seeds > 1:
        cells = (cells + " ± " + std.map(lambda s: format(s, fmt))).where(count > 1, cells)
        cells = cells.where(count >= seeds, cells + count.map(lambda k: f" ({k} of {seeds} seeds)"))
    order = pd.MultiIndex.from_product([grid["sizes"], grid["strategies"]], names=KEYS)
    return cells.reindex(order).fillna(MISSING).reset_index()  # — : no seed of the cell is finished


def comparison_rows(wide: pd.DataFrame, grid: dict, label: str, items: list[str], higher_is_better: bool,
                    summaries: tuple[str, ...] = ("macro avg", "worst")) -> list[dict]:
    """Paired comparison of every strategy with the baseline on the same seeds, for each summary
    and each item (domain or subtask): the mean difference, its paired t interval, the sign-flip
    p, the Holm-adjusted p across the strategies (per size and metric), the difference the seeds
    could detect at 80% power and the seeds the observed difference would need (eval/analysis/stats.py)."""
    base = baseline_of(grid)
    rows = []
    for size in grid["sizes"]:
        if (size, base) not in wide.index.droplevel("seed"):
            continue
        reference = wide.loc[(size, base)]
        rivals = [s for s in grid["strategies"] if s != base and (size, s) in wide.index.droplevel("seed")]
        for strategy in rivals:
            ours = wide.loc[(size, strategy)]
            seeds = sorted(set(ours.index) & set(reference.index))
            if len(seeds) < 2:
                continue  # one pair has no spread: nothing to test
            k, n = wins(ours[items].mean(), reference[items].mean(), lower_is_better=not higher_is_better)
            for i, column in enumerate([*summaries, *[item for item in items if item not in summaries]]):
                test = paired_test(ours.loc[seeds, column], reference.loc[seeds, column])
                rows.append({
                    "size": size, "strategy": strategy, "baseline": base, "metric": f"{label}, {column}",
                    "higher_is_better": higher_is_better, "baseline_mean": reference.loc[seeds, column].mean(),
                    "strategy_mean": ours.loc[seeds, column].mean(), "difference": test.mean, "ci_low": test.low,
                    "ci_high": test.high, "sd_of_differences": test.sd, "p_sign_flip": test.p_value,
                    "min_detectable": test.mdd, "pairs": test.pairs, "comparisons": len(rivals),
                    "seeds_needed": seeds_needed(test.mean, test.sd, comparisons=len(rivals)),
                    # Wins count the items once, on the first summary row, which averages them.
                    "wins": k if i == 0 else None, "items": n if i == 0 else None,
                })
    for group in pd.DataFrame(rows).groupby(["size", "metric"], sort=False).groups.values() if rows else []:
        adjusted = holm([rows[i]["p_sign_flip"] for i in group])
        for i, p in zip(group, adjusted):
            rows[i]["p_holm"] = float(p)
            rows[i]["verdict"] = verdict(rows[i], higher_is_better)
    return rows


def verdict(row: dict, higher_is_better: bool) -> str:
    """'better' or 'worse' only where the Holm-adjusted p is below ALPHA; otherwise why not."""
    if row["p_holm"] < ALPHA:
        return "better" if (row["difference"] > 0) == higher_is_better else "worse"
    floor = smallest_p(row["pairs"]) * row["comparisons"]
    if floor >= ALPHA:
        return f"cannot be significant with {row['pairs']} seeds"
    return "not significant"


def comparison_markdown(rows: pd.DataFrame) -> pd.DataFrame:
    needed = ["" if pd.isna(n) else f"{int(n)}" for n in rows["seeds_needed"]]
    shown = pd.DataFrame({
        "size": rows["size"], "strategy": rows["strategy"], "metric": rows["metric"],
        "strategy − baseline [95% t-interval]": [f"{d:+.4f} [{lo:+.4f}, {hi:+.4f}]"
                                                for d, lo, hi in zip(rows["difference"], rows["ci_low"], rows["ci_high"])],
        "p (sign-flip)": rows["p_sign_flip"].map(lambda p: f"{p:.3g}"),
        "p (Holm)": rows["p_holm"].map(lambda p: f"{p:.3g}"),
        "detectable at 80% power": rows["min_detectable"].map(lambda d: f"{d:.4f}"),
        "seeds needed": [n or "more than 10,000" for n in needed],
        "wins": ["" if pd.isna(k) else f"{int(k)} of {int(n)}" for k, n in zip(rows["wins"], rows["items"])],
        "seeds": rows["pairs"], "verdict": rows["verdict"],
    })
    return shown


def comparison_note(rows: pd.DataFrame, alpha: float = ALPHA) -> str:
    """What the seeds can show, said once above the table."""
    pairs, comparisons = int(rows["pairs"].min()), int(rows["comparisons"].max())
    floor = smallest_p(pairs)
    text = (f"With {pairs} seeds the smallest possible sign-flip p is {floor:.3g} (2 / 2^{pairs}); after Holm over "
            f"{comparisons} strategies, {min(1.0, floor * comparisons):.3g}.")
    if floor * comparisons >= alpha:
        need = max(2, int(np.ceil(np.log2(2 * comparisons / alpha))))
        text += (f" No difference in this table can be significant at {alpha}; at least {need} seeds are needed "
                 f"before any can, and 'seeds needed' gives the seeds at which each observed difference, with its "
                 f"observed spread, would be detected with 80% power.")
    return text


MISSING = "—"  # a downstream cell without a result: the task failed in that cell's runs


def downstream_summary(long: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Per seed, the macro average of each (task, metric) over the task's subtasks. A failed
    task's rows (no metric; see ``downstream_failures``) are left out."""
    long = long[long["metric"].notna()]
    summary = long.groupby([*KEYS, "seed", "task", "metric"], sort=False)["value"].mean().rename("value").reset_index()
    summary["column"] = summary["task"] + " " + summary["metric"]
    pairs = list(dict.fromkeys(zip(summary["task"], summary["metric"])))
    return summary, pairs


def downstream_failures(long: pd.DataFrame) -> pd.DataFrame:
    """size, strategy, seed, task, error: every downstream task that failed in a run."""
    columns = [*KEYS, "seed", "task", "error"]
    if "error" not in long.columns:  # a table written before tasks could fail alone
        return pd.DataFrame(columns=columns)
    return long.loc[long["error"].notna(), columns].drop_duplicates().reset_index(drop=True)


def downstream_summary_cells(long: pd.DataFrame, grid: dict, fmt: str = ".4f") -> pd.DataFrame:
    """Each task's macro average over its subtasks, as 'mean ± std' over seeds per (size,
    strategy), rows in grid order. Where no seed has a result (the task failed) the cell is
    '—', and a task that failed in every run keeps one column of them; where only some seeds
    have one, the cell says over how many."""
    summary, pairs = downstream_summary(long)
    columns = []
    for task in dict.fromkeys(long["task"]):  # config order (eval.analysis.collect.downstream)
        columns += [f"{t} {m}" for t, m in pairs if t == task] or [task]
    index = [*KEYS, "seed"]
    wide = (summary.pivot_table(index=index, columns="column", values="value", sort=False) if len(summary)
            else pd.DataFrame(index=pd.MultiIndex.from_tuples([], names=index)))
    grouped = wide.reindex(columns=columns).groupby(level=KEYS, sort=False)
    order = pd.MultiIndex.from_product([grid["sizes"], grid["strategies"]], names=KEYS)
    mean, std, count = (frame.reindex(order) for frame in (grouped.mean(), grouped.std(ddof=1), grouped.count()))
    n = len(grid["seeds"])

    def cell(m: float, s: float, k: float) -> str:
        k = 0 if pd.isna(k) else int(k)
        if k == 0 or pd.isna(m):
            return MISSING
        text = format(m, fmt) + (" ± " + format(s, fmt) if k > 1 else "")
        return text + (f" ({k} of {n} seeds)" if k < n else "")

    cells = pd.DataFrame({c: [cell(*v) for v in zip(mean[c], std[c], count[c])] for c in columns}, index=order)
    return cells.reset_index()


def downstream_failure_table(long: pd.DataFrame, grid: dict) -> pd.DataFrame | None:
    """The footnote of the downstream summary: each failed task, the runs it failed in and the
    error (None when nothing failed)."""
    failures = downstream_failures(long)
    if not len(failures):
        return None
    runs = len(grid["sizes"]) * len(grid["strategies"]) * len(grid["seeds"])
    order = {task: i for i, task in enumerate(dict.fromkeys(long["task"]))}  # the summary's column order
    rows = []
    groups = failures.groupby(["task", "error"], sort=False)
    for (task, error), group in sorted(groups, key=lambda item: order[item[0][0]]):
        where = (f"every run ({runs})" if len(group) == runs else
                 ", ".join(f"{size}/{strategy}/seed{seed}"
                           for size, strategy, seed in zip(group["size"], group["strategy"], group["seed"])))
        rows.append({"task": task, "failed in": where, "error": error})
    return pd.DataFrame(rows)


def downstream_sections(long: pd.DataFrame, grid: dict, spread: str) -> list[tuple[str, pd.DataFrame]]:
    """The downstream table's summary section and, when a task failed somewhere, its footnote:
    the failed tasks with their errors (from the ``failed`` of each run's downstream.json)."""
    failures = downstream_failure_table(long, grid)
    note = f"; {MISSING}: no result, the task failed: see the next table" if failures is not None else ""
    sections = [(f"Downstream, macro average over each task's subtasks ({spread}; higher is better{note})",
                 downstream_summary_cells(long, grid))]
    if failures is not None:
        sections.append((f"Downstream tasks that failed, so their cells are {MISSING} or over fewer seeds",
                         failures))
    return sections


def compute_table(compute: pd.DataFrame, grid: dict) -> pd.DataFrame:
    """FLOPs per stage and in total (mean over seeds), relative to the baseline, and job time."""
    # The runs of a fan-out stage (swarm-0 … swarm-{N-1}) sum into one column for their stage.
    column = compute["stage"].map(lambda stage: Stage.parse(stage).group)
    flops = compute.assign(stage=column).pivot_table(index=[*KEYS, "seed"], columns="stage", values="flops",
                                                     aggfunc="sum", sort=False)
    # Pipeline order: reference, proxy, their later rounds (reference-r2, proxy-r2, ...), swarm, fit, final.
    stages = sorted(dict.fromkeys(column),
                    key=lambda s: (s == "final", Stage.parse(s).round, STAGE_ORDER.index(Stage.parse(s).kind)))
    flops = flops[stages]
    totals = pd.DataFrame({
        "total": flops.sum(axis=1),
        "tokens": compute.groupby([*KEYS, "seed"], sort=False)["tokens"].sum(),
        "hours": compute.groupby([*KEYS, "seed"], sort=False)["wall_seconds"].sum() / 3600,
    })
    mean = pd.concat([flops, totals], axis=1).groupby(level=KEYS, sort=False).mean()
    base = mean["total"].xs(baseline_of(grid), level="strategy") if baseline_of(grid) in mean.index.get_level_values(1) else None
    out = pd.DataFrame(index=mean.index)
    for stage in stages:
        out[f"{stage} FLOPs"] = mean[stage].map(lambda v: "" if np.isnan(v) else f"{v:.3g}")
    out["total FLOPs"] = mean["total"].map(lambda v: f"{v:.3g}")
    if base is not None:
        # "" where the size has no finished baseline cell (an unfinished grid).
        out["× baseline"] = [f"{t / base[size]:.2f}" if size in base.index else ""
                             for (size, _), t in mean["total"].items()]
    out["tokens"] = mean["tokens"].map(lambda v: f"{v:.3g}")
    hours = totals["hours"].groupby(level=KEYS, sort=False)
    # Jobs' time added up: runs that ran side by side (a swarm's) count fully each.
    out["job time (h)"] = [f"{m:.3f}" + (f" ± {s:.3f}" if len(grid["seeds"]) > 1 else "")
                            for m, s in zip(hours.mean(), hours.std(ddof=1))]
    if "max_epochs" in compute and compute["max_epochs"].notna().any():
        # The most any stage of any seed went over one domain's train split (> 1: repeated data).
        known = compute.dropna(subset=["max_epochs"])
        worst = known.loc[known.groupby(KEYS, sort=False)["max_epochs"].idxmax()].set_index(KEYS)
        out["max epochs (domain, stage)"] = [
            f"{worst.at[key, 'max_epochs']:.2f} ({worst.at[key, 'max_epochs_domain']}, {worst.at[key, 'stage']})"
            if key in worst.index else "" for key in out.index]
    return out.reset_index()


def epochs_table(compute: pd.DataFrame) -> pd.DataFrame | None:
    """Epochs per domain of every run (a shared reference or proxy once), in grid order: tokens
    the run trained on the domain / the domain's train tokens, and the largest; None if unknown."""
    columns = [c for c in compute.columns if c.startswith("epochs/")]
    if not columns or compute["max_epochs"].isna().all():
        return None
    runs = compute.drop_duplicates("run")
    out = pd.DataFrame({"run": runs["run"]})  # size/strategy/seed/stage
    for column in columns:
        out[column.removeprefix("epochs/")] = runs[column].map(lambda v: "" if np.isnan(v) else f"{v:.2f}")
    out["max"] = runs["max_epochs"].map(lambda v: "" if np.isnan(v) else f"{v:.2f}")
    return out.reset_index(drop=True)


def to_latex(frame: pd.DataFrame, caption: str) -> str:
    body = frame.to_latex(index=False, escape=True, column_format="l" * len(frame.columns))
    body = body.replace("±", r"$\pm$").replace("−", "-").replace("×", r"$\times$").replace("ρ", r"$\rho$")
    return f"% {caption}\n{body}"


def write_sections(out_dir: Path, name: str, sections: list[tuple[str, pd.DataFrame]],
                   footer: str | None = None) -> None:
    """``name.md`` with a heading per section and ``name.tex`` with a tabular per section, and
    ``name.html``; ``footer`` (an unfinished grid's missing cells) ends each."""
    md = [f"## {title}\n\n" + frame.to_markdown(index=False, disable_numparse=True) for title, frame in sections]
    write_text(out_dir / f"{name}.md", "\n\n".join(md + ([f"**{footer}**"] if footer else [])) + "\n")
    tex = "\n".join(to_latex(frame, title) for title, frame in sections)
    write_text(out_dir / f"{name}.tex", tex + (f"\n% {footer}\n" if footer else ""))
    # For the Snakemake report, which shows HTML but not Markdown.
    html = [f"<h3>{title}</h3>\n" + frame.to_html(index=False, border=0) for title, frame in sections]
    footer_html = [f"<p><strong>{escape(footer)}</strong></p>"] if footer else []
    write_text(out_dir / f"{name}.html", "\n".join(html + footer_html) + "\n")

