"""The registry of result tables: name -> how to write it, its caption and the grids that have it.
``python -m eval.analysis.aggregate`` writes them; the workflow (rules/results.smk) takes the
tables of a grid and their captions from here, before anything runs. Nothing here imports pandas:
the workflow reads it while it is parsed.

Every table is ``{results_dir}/tables/{name}.csv`` (long: one row per measured number, with the
runs' provenance); a table with ``views`` is also written for reading as ``{name}.md``, ``.tex``
and ``.html`` (the HTML goes into ``snakemake --report``, beside its caption).

How to add a table
------------------
1. Write a function ``def my_table(results) -> None`` (e.g. in eval/analysis/result_tables.py):
   ``results`` is its ``Results``, the grid's collected runs (``results.perplexity``, ...;
   eval/analysis/collect.py reads the runs) and ``results.out``, the folder it writes
   ``my_table.csv`` to (``mixbench.io.write_csv``) and, with views, the sections of
   ``my_table.md``/``.tex``/``.html`` (``eval.analysis.tables.write_sections``).
2. Register it below: ``"my_table": Table("eval.analysis.<module>:my_table", caption="...")``,
   with ``views=False`` for a CSV alone, and ``needs``/``strategy`` (eval/analysis/outputs.py) if
   only some grids have it.
3. Record its bytes: tests/test_figures.py checks every table file of two fixture grids against
   its SHA-256 in tests/fixtures/table_digests.json, so a new table fails it once, with a message
   that prints the entries to add there (check the table's content first).
Those are the three files: the workflow, the report and the tests pick the rest up. A figure
reads the table by naming it in its ``tables`` (eval/analysis/figure_registry.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from eval.analysis.outputs import Output

VIEWS = ("md", "tex", "html")


@dataclass(frozen=True)
class Table(Output):
    views: bool = True  # also written as .md, .tex and .html (the HTML into the report)


REGISTRY: dict[str, Table] = {
    "perplexity": Table("eval.analysis.result_tables:perplexity", caption="""
        Bits per byte and word perplexity on each domain's held-out test split (mean ± std over seeds),
        with the macro average over domains and the worst domain. Lower is better."""),
    "downstream": Table("eval.analysis.result_tables:downstream", caption="""
        Downstream accuracy (zero-shot, lm-evaluation-harness): each task macro-averaged over its
        subtasks, then the generated tasks per domain (mean ± std over seeds). Higher is better."""),
    "comparison": Table("eval.analysis.result_tables:comparison", caption="""
        Every strategy minus the baseline (uniform) on the same seeds, for the macro average, the worst
        domain and each domain (or subtask): the mean paired difference with its paired t 95% interval,
        the exact sign-flip permutation p, that p Holm-adjusted across the strategies compared on the
        same metric, the smallest difference the seeds detect with 80% power, the seeds the observed
        difference would need, and the number of domains (or subtasks) where the strategy's mean is
        better. A difference is called better or worse only where its adjusted p is below 0.05; with
        three seeds none can be (the smallest sign-flip p is 0.25)."""),
    "weights": Table("eval.analysis.result_tables:weights", caption="""
        The mixture each final model trained on: the share of training tokens per domain (mean ± std over seeds)."""),
    "compute": Table("eval.analysis.result_tables:compute", caption="""
        Training FLOPs per stage (reference, proxy, swarm (all its runs), fit (none: it trains nothing),
        final; strategy overheads included), their total and its ratio to the baseline, training tokens
        and job time (the jobs' times added up: a swarm's runs side by side count each; mean over
        seeds)."""),
    "fits": Table("eval.analysis.result_tables:fits", needs="fit stage", caption="""
        Every fit stage of the grid (RegMix: a regression from mixture to held-out loss on a swarm of
        small runs): its target, regressor and number of swarm runs, the Spearman rank correlation
        between the observed targets and k-fold out-of-fold predictions (how well the fit ranks mixtures
        it did not see), the predicted target of the chosen mixture beside the best observed one, and the
        chosen mixture, one row per seed."""),
    "trajectories": Table("eval.analysis.result_tables:trajectories", views=False, caption="""
        The mixture of every stage whose mixture changes during training, at each logged step (at most
        about 200 per run), read from the run's log.csv: the sampling weights, or where the stage weights
        its loss the sampling times the loss weights, normalised (``mixture`` says which); DoReMi's
        proxies add their per-domain excess losses from trace.jsonl."""),
    "curves": Table("eval.analysis.result_tables:curves", views=False, caption="""
        The held-out loss per domain of every stage over training (val.csv), with the tokens and FLOPs
        the run had spent and the FLOPs of the cell's earlier stages."""),
    "entropy": Table("eval.analysis.result_tables:entropy", views=False, caption="""
        The entropy (nats) of every stage's mixture over its steps (at most about 200 per run), from
        its log.csv."""),
    "swarm": Table("eval.analysis.result_tables:swarm", views=False, needs="fit stage", caption="""
        Every run a fit stage fitted on: its mixture, concentration, observed target and its
        out-of-fold and in-sample predictions."""),
    "landscape": Table("eval.analysis.landscape:landscape", needs="landscape", caption="""
        The landscape study: each strategy's regret, its final model's test macro bits per byte minus that
        of the lattice mixture chosen on the validation split, on the same seeds (mean, paired t 95%
        interval, exact sign-flip p, Holm-adjusted across the strategies, the smallest regret the seeds
        detect with 80% power), and its mean rank among the lattice's mixtures on the test split."""),
    "lattice": Table("eval.analysis.landscape:lattice", views=False, needs="landscape", caption="""
        Every lattice run of the landscape study: its mixture, mean held-out loss on the validation split,
        test bits per byte per domain and their macro average, and whether it is its seed's chosen mixture."""),
}


def table_names(config: dict) -> list[str]:
    """The tables this config produces, in registry order, known before any run exists."""
    return [name for name, table in REGISTRY.items() if table.wanted(config)]


def table_files(name: str) -> list[str]:
    """The files of one table, the CSV first."""
    return [f"{name}.csv", *(f"{name}.{ext}" for ext in (VIEWS if REGISTRY[name].views else ()))]
