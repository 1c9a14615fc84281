"""The writers of the result tables (eval/analysis/table_registry.py lists them): each takes the
grid's ``Results`` and writes its ``{name}.csv`` to ``results.out`` and, for a table with views, its
``{name}.md``/``.tex``/``.html`` (eval/analysis/tables.py). ``Results`` reads every finished run
once, whichever tables ask for it."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from eval.analysis import collect, collect_curves, collect_fits
from eval.analysis.tables import (MISSING, baseline_of, comparison_markdown, comparison_note, comparison_rows,
                                  compute_table, downstream_sections, downstream_summary, epochs_table,
                                  mean_std_cells, per_seed, spread_label, write_sections)
from eval.metrics import HELDOUT_METRICS, PRIMARY
from mixbench.io import write_csv


class Results:
    """The grid's collected results, each read when a table first asks for it."""

    def __init__(self, config: dict):
        self.config, self.grid = config, config["grid"]
        self.out = Path(config["results_dir"]) / "tables"
        self.spread, self.base = spread_label(self.grid), baseline_of(self.grid)

    @functools.cached_property
    def perplexity(self) -> pd.DataFrame:
        return collect.perplexity(self.config)

    @functools.cached_property
    def downstream(self) -> pd.DataFrame:
        return collect.downstream(self.config)

    @functools.cached_property
    def fits(self) -> pd.DataFrame:
        return collect_fits.fits(self.config)

    @functools.cached_property
    def primary(self) -> pd.DataFrame:
        """The primary held-out metric (eval/metrics.py) per seed and domain, with its summaries."""
        return per_seed(self.perplexity, PRIMARY.column, "domain", summaries=True)

    def downstream_items(self):
        """(task, metric, its rows, their values per seed and domain or subtask) of every scored pair."""
        down = self.downstream
        for task, metric in downstream_summary(down)[1]:
            rows = down[(down.task == task) & (down.metric == metric)]
            yield task, metric, rows, per_seed(rows.assign(item=rows["domain"].fillna(rows["subtask"])), "value",
                                               "item", summaries=True, higher_is_better=True)


def perplexity(results: Results) -> None:
    ppl, grid = results.perplexity, results.grid
    write_csv(ppl, results.out / "perplexity.csv")
    write_sections(results.out, "perplexity", [
        (f"{metric.label.capitalize()} on the held-out test split ({results.spread}; "
         f"{'higher' if metric.higher_is_better else 'lower'} is better)",
         mean_std_cells(results.primary if metric.primary else per_seed(ppl, metric.column, "domain", summaries=True),
                        grid, metric.number_format))
        for metric in HELDOUT_METRICS if metric.label])


def downstream(results: Results) -> None:
    down, grid = results.downstream, results.grid
    sections = []
    if len(down):
        # The summary ('—' where a task failed) and, if any task failed, a table of the failures.
        sections += downstream_sections(down, grid, results.spread)
        for task, metric, rows, by_item in results.downstream_items():
            if rows["subtask"].nunique() > 1:
                sections.append((f"{task} {metric} per subtask ({results.spread})",
                                 mean_std_cells(by_item, grid, ".4f").fillna(MISSING)))  # — : the task failed
    else:
        sections.append(("Downstream", pd.DataFrame({"note": ["no downstream task configured (downstream.tasks)"]})))
    write_csv(down, results.out / "downstream.csv")
    write_sections(results.out, "downstream", sections)


def comparison(results: Results) -> None:
    ppl, grid, base = results.perplexity, results.grid, results.base
    domains = list(dict.fromkeys(ppl["domain"]))
    comparisons = comparison_rows(results.primary, grid, PRIMARY.label, domains,
                                  higher_is_better=PRIMARY.higher_is_better)
    if len(results.downstream):
        for task, metric, _, by_item in results.downstream_items():
            items = [c for c in by_item.columns if c not in ("macro avg", "worst")]
            comparisons += comparison_rows(by_item, grid, f"{task} {metric}", items, higher_is_better=True,
                                           summaries=("macro avg",))
    frame = pd.DataFrame(comparisons)
    for key in collect.PROVENANCE:  # the runs each row summarises
        frame[key] = ";".join(sorted(set(ppl[key].astype(str))))
    write_csv(frame, results.out / "comparison.csv")
    title = (f"Each strategy minus {base} on the same seeds: mean difference [paired t 95% interval], exact "
             "sign-flip p, Holm-adjusted across the strategies per metric (significant: below 0.05), the smallest "
             "difference the seeds detect with 80% power, and the seeds the observed difference would need; "
             "wins = domains or subtasks where its mean is better. "
             + (comparison_note(frame) if len(frame) else ""))
    why_empty = (f"no strategy besides {base}" if len(grid["strategies"]) < 2 else
                 f"no comparison: a paired comparison needs at least 2 seeds on which both {base} and the strategy ran")
    shown = comparison_markdown(frame) if len(frame) else pd.DataFrame({"note": [why_empty]})
    write_sections(results.out, "comparison", [(title, shown)])


def weights(results: Results) -> None:
    mixture = collect.weights(results.config)
    write_csv(mixture, results.out / "weights.csv")
    write_sections(results.out, "weights", [(
        f"Mixture the final model trained on ({results.spread})",
        mean_std_cells(per_seed(mixture, "weight", "domain", summaries=False), results.grid, ".4f"))])


def compute(results: Results) -> None:
    frame = collect.compute(results.config)
    write_csv(frame, results.out / "compute.csv")
    shared = frame.groupby("run")["size"].nunique()
    shared_note = (f"; {len(shared[shared > 1])} reference/proxy runs are shared by several final sizes and counted in "
                   "each of their rows (compute.csv names each row's run)" if (shared > 1).any() else "")
    epochs = epochs_table(frame)
    write_sections(results.out, "compute", [(
        f"Compute per strategy, every stage included (mean over seeds; FLOPs = 2N per forward and 4N per backward "
        f"token; × baseline = total relative to {results.base}{shared_note}; max epochs = the most any run of the "
        "cell went over one domain's train split, above 1 it repeated data)", compute_table(frame, results.grid)),
        ("Epochs per domain of every run: tokens it trained on the domain / the domain's train tokens (above 1 the "
         "run repeated that domain's data; training windows are drawn at random, so these are expected passes)",
         epochs if epochs is not None else pd.DataFrame({"note": [
             "unknown: the runs have no log.csv or the data no tokens/meta.json"]}))])


def fits(results: Results) -> None:
    write_csv(results.fits, results.out / "fits.csv")
    write_sections(results.out, "fits", [(
        "Fits on a swarm of small runs (RegMix): the target regressed, the regressor, its Spearman rank correlation "
        "between observed and out-of-fold predicted targets over k folds of the swarm, and the mixture it chose "
        "(mean of the top-k of the sampled candidates), per seed", collect_fits.fits_table(results.fits))])


def swarm(results: Results) -> None:
    write_csv(collect_fits.swarm(results.config), results.out / "swarm.csv")


def trajectories(results: Results) -> None:
    write_csv(collect.trajectories(results.config), results.out / "trajectories.csv")


def curves(results: Results) -> None:
    write_csv(collect_curves.curves(results.config), results.out / "curves.csv")


def entropy(results: Results) -> None:
    write_csv(collect_curves.entropy(results.config), results.out / "entropy.csv")
