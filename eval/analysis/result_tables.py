"""The writers of the result tables (eval/analysis/table_registry.py lists them): each takes the
grid's ``Results`` and writes its ``{name}.csv`` to ``results.out`` and, for a table with views, its
``{name}.md``/``.tex``/``.html`` (eval/analysis/tables.py). ``Results`` checks the grid once
(eval/analysis/grid_check.py) and reads every cell that passes once, whichever tables ask for it;
on an unfinished grid every CSV ends with a row per missing cell (eval/analysis/partial.py) and
every view with a line naming them."""

from __future__ import annotations

import functools
from pathlib import Path

import pandas as pd

from eval.analysis import collect, collect_curves, collect_fits
from eval.analysis.grid_check import check_grid, missing_note
from eval.analysis.partial import with_missing_rows
from eval.analysis.tables import (MISSING, baseline_of, comparison_markdown, comparison_note, comparison_rows,
                                  compute_table, downstream_sections, downstream_summary, epochs_table,
                                  mean_std_cells, per_seed, spread_label)
from eval.analysis.tables import write_sections as write_views
from eval.metrics import HELDOUT_METRICS, PRIMARY
from mixbench.errors import DataError
from mixbench.io import write_csv as write_frame


class Results:
    """The grid's collected results, each read when a table first asks for it."""

    def __init__(self, config: dict):
        self.config, self.grid = config, config["grid"]
        self.out = Path(config["results_dir"]) / "tables"
        self.spread, self.base = spread_label(self.grid), baseline_of(self.grid)
        self.check = check_grid(config)
        self.cells = self.check.kept
        self.check.report()  # a line per run or evaluation left out, in the tables job's log
        if not self.cells:
            raise DataError(f"no cell of the grid in {config['runs_dir']} is finished and made by this config "
                            f"(the lines above say why each is missing): run `snakemake --cores all` first")
        self.note = missing_note(self.check.missing, len(self.cells) + len(self.check.missing))

    def write_csv(self, frame: pd.DataFrame, name: str) -> None:
        """``{name}.csv``, with a row per missing cell on an unfinished grid."""
        write_frame(with_missing_rows(frame, self.check.missing), self.out / f"{name}.csv")

    def write_sections(self, name: str, sections: list[tuple[str, pd.DataFrame]]) -> None:
        """The views of table ``name``, ending with the missing cells' line on an unfinished grid."""
        write_views(self.out, name, sections, footer=self.note)

    @functools.cached_property
    def perplexity(self) -> pd.DataFrame:
        return collect.perplexity(self.config, self.cells)

    @functools.cached_property
    def downstream(self) -> pd.DataFrame:
        return collect.downstream(self.config, self.cells)

    @functools.cached_property
    def fits(self) -> pd.DataFrame:
        return collect_fits.fits(self.config, self.cells)

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
    results.write_csv(ppl, "perplexity")
    results.write_sections("perplexity", [
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
    results.write_csv(down, "downstream")
    results.write_sections("downstream", sections)


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
    results.write_csv(frame, "comparison")
    title = (f"Each strategy minus {base} on the same seeds: mean difference [paired t 95% interval], exact "
             "sign-flip p, Holm-adjusted across the strategies per metric (significant: below 0.05), the smallest "
             "difference the seeds detect with 80% power, and the seeds the observed difference would need; "
             "wins = domains or subtasks where its mean is better. "
             + (comparison_note(frame) if len(frame) else ""))
    why_empty = (f"no strategy besides {base}" if len(grid["strategies"]) < 2 else
                 f"no comparison: a paired comparison needs at least 2 seeds on which both {base} and the strategy ran")
    shown = comparison_markdown(frame) if len(frame) else pd.DataFrame({"note": [why_empty]})
    results.write_sections("comparison", [(title, shown)])


def weights(results: Results) -> None:
    mixture = collect.weights(results.config, results.cells)
    results.write_csv(mixture, "weights")
    results.write_sections("weights", [(
        f"Mixture the final model trained on ({results.spread})",
        mean_std_cells(per_seed(mixture, "weight", "domain", summaries=False), results.grid, ".4f"))])


def compute(results: Results) -> None:
    frame = collect.compute(results.config, results.cells)
    results.write_csv(frame, "compute")
    shared = frame.groupby("run")["size"].nunique()
    shared_note = (f"; {len(shared[shared > 1])} reference/proxy runs are shared by several final sizes and counted in "
                   "each of their rows (compute.csv names each row's run)" if (shared > 1).any() else "")
    epochs = epochs_table(frame)
    results.write_sections("compute", [(
        f"Compute per strategy, every stage included (mean over seeds; FLOPs = 2N per forward and 4N per backward "
        f"token; × baseline = total relative to {results.base}{shared_note}; max epochs = the most any run of the "
        "cell went over one domain's train split, above 1 it repeated data)", compute_table(frame, results.grid)),
        ("Epochs per domain of every run: tokens it trained on the domain / the domain's train tokens (above 1 the "
         "run repeated that domain's data; training windows are drawn at random, so these are expected passes)",
         epochs if epochs is not None else pd.DataFrame({"note": [
             "unknown: the runs have no log.csv or the data no tokens/meta.json"]}))])


def fits(results: Results) -> None:
    results.write_csv(results.fits, "fits")
    results.write_sections("fits", [(
        "Fits on a swarm of small runs (RegMix): the target regressed, the regressor, its Spearman rank correlation "
        "between observed and out-of-fold predicted targets over k folds of the swarm, and the mixture it chose "
        "(mean of the top-k of the sampled candidates), per seed", collect_fits.fits_table(results.fits))])


def swarm(results: Results) -> None:
    results.write_csv(collect_fits.swarm(results.config, results.cells), "swarm")


def trajectories(results: Results) -> None:
    results.write_csv(collect.trajectories(results.config, results.cells), "trajectories")


def curves(results: Results) -> None:
    results.write_csv(collect_curves.curves(results.config, results.cells), "curves")


def entropy(results: Results) -> None:
    results.write_csv(collect_curves.entropy(results.config, results.cells), "entropy")
