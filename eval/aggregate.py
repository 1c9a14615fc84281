"""Collect finished runs into the result tables.

    python -m eval.aggregate --config config/config.yaml

Writes to ``{results_dir}/tables/`` (every ``.md`` also as ``.tex`` and ``.html``):

- ``perplexity.csv`` (long: size, strategy, seed, domain, bits per byte, word and byte
  perplexity, provenance) and ``perplexity.md``: mean ± std over seeds per strategy and
  domain, with the macro average over domains and the worst domain;
- ``downstream.csv`` (long: one row per task, subtask, metric and seed) and ``downstream.md``:
  each task's macro average over its subtasks, then the generated tasks per domain;
- ``comparison.csv``/``.md``: every strategy against the baseline (uniform) on the same seeds,
  per summary and per domain or subtask: the mean difference, its paired t 95% interval, the
  exact sign-flip p, the Holm-adjusted p, the minimum detectable difference, the seeds needed,
  and wins over domains or subtasks (eval/stats.py);
- ``weights.csv``/``.md``: the mixture each final model trained on;
- ``compute.csv``/``.md``: FLOPs per stage (reference and proxy runs included), tokens, wall time,
  and the data budget: tokens trained and epochs per domain of every run (``epochs/<domain>``);
- ``trajectories.csv``: every traced weight vector of every stage (e.g. DoReMi's proxy α per step)
  and DoReMi's per-domain excess losses;
- ``curves.csv``: the held-out loss per domain of every stage over training, with tokens, FLOPs
  and the FLOPs of the stages before it (eval/collect_curves.py);
- ``entropy.csv``: the entropy of every stage's mixture over its steps;
- ``fits.csv``/``.md``: every ``fit`` stage (RegMix): target, regressor, its k-fold Spearman ρ per
  seed and the mixture it chose; ``swarm.csv``: every run it fitted on (eval/collect_fits.py).

Bits per byte is the tokenizer-independent number to compare; word perplexities of a small
model span orders of magnitude across domains, so they are shown with significant digits.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from eval import collect, collect_curves, collect_fits
from eval.tables import (MISSING, baseline_of, comparison_markdown, comparison_note, comparison_rows, compute_table,
                         downstream_sections, downstream_summary, epochs_table, mean_std_cells, per_seed, spread_label,
                         write_sections)
from mixbench.cli import config_command
from mixbench.io import write_csv

TABLE_NAMES = ("perplexity", "downstream", "comparison", "weights", "compute", "fits")
CSV_ONLY = ("trajectories", "curves", "entropy", "swarm")


def table_files(name: str) -> list[str]:
    return [f"{name}.csv"] if name in CSV_ONLY else [f"{name}.{ext}" for ext in ("csv", "md", "tex", "html")]


def aggregate(config: dict) -> None:
    grid, out = config["grid"], Path(config["results_dir"]) / "tables"
    spread, base = spread_label(grid), baseline_of(grid)
    ppl, down = collect.perplexity(config), collect.downstream(config)
    domains = list(dict.fromkeys(ppl["domain"]))

    bpb = per_seed(ppl, "bits_per_byte", "domain", summaries=True)
    write_csv(ppl, out / "perplexity.csv")
    write_sections(out, "perplexity", [
        (f"Bits per byte on the held-out test split ({spread}; lower is better)", mean_std_cells(bpb, grid, ".4f")),
        (f"Word perplexity on the held-out test split ({spread}; lower is better)",
         mean_std_cells(per_seed(ppl, "perplexity", "domain", summaries=True), grid, ".4g")),
    ])

    comparisons = comparison_rows(bpb, grid, "bits per byte", domains, higher_is_better=False)
    sections = []
    if len(down):
        _, pairs = downstream_summary(down)
        # The summary ('—' where a task failed) and, if any task failed, a table of the failures.
        sections += downstream_sections(down, grid, spread)
        for task, metric in pairs:
            rows = down[(down.task == task) & (down.metric == metric)]
            by_item = per_seed(rows.assign(item=rows["domain"].fillna(rows["subtask"])), "value", "item",
                               summaries=True, higher_is_better=True)
            if rows["subtask"].nunique() > 1:
                sections.append((f"{task} {metric} per subtask ({spread})",
                                 mean_std_cells(by_item, grid, ".4f").fillna(MISSING)))  # — : the task failed
            items = [c for c in by_item.columns if c not in ("macro avg", "worst")]
            comparisons += comparison_rows(by_item, grid, f"{task} {metric}", items, higher_is_better=True,
                                           summaries=("macro avg",))
    else:
        sections.append(("Downstream", pd.DataFrame({"note": ["no downstream task configured (downstream.tasks)"]})))
    write_csv(down, out / "downstream.csv")
    write_sections(out, "downstream", sections)

    comparison = pd.DataFrame(comparisons)
    for key in collect.PROVENANCE:  # the runs each row summarises
        comparison[key] = ";".join(sorted(set(ppl[key].astype(str))))
    write_csv(comparison, out / "comparison.csv")
    title = (f"Each strategy minus {base} on the same seeds: mean difference [paired t 95% interval], exact "
             "sign-flip p, Holm-adjusted across the strategies per metric (significant: below 0.05), the smallest "
             "difference the seeds detect with 80% power, and the seeds the observed difference would need; "
             "wins = domains or subtasks where its mean is better. "
             + (comparison_note(comparison) if len(comparison) else ""))
    why_empty = (f"no strategy besides {base}" if len(grid["strategies"]) < 2 else
                 f"no comparison: a paired comparison needs at least 2 seeds on which both {base} and the strategy ran")
    shown = comparison_markdown(comparison) if len(comparison) else pd.DataFrame({"note": [why_empty]})
    write_sections(out, "comparison", [(title, shown)])

    mixture = collect.weights(config)
    write_csv(mixture, out / "weights.csv")
    write_sections(out, "weights", [(f"Mixture the final model trained on ({spread})",
                                     mean_std_cells(per_seed(mixture, "weight", "domain", summaries=False), grid, ".4f"))])

    compute = collect.compute(config)
    write_csv(compute, out / "compute.csv")
    shared = compute.groupby("run")["size"].nunique()
    shared_note = (f"; {len(shared[shared > 1])} reference/proxy runs are shared by several final sizes and counted in "
                   "each of their rows (compute.csv names each row's run)" if (shared > 1).any() else "")
    epochs = epochs_table(compute)
    write_sections(out, "compute", [(
        f"Compute per strategy, every stage included (mean over seeds; FLOPs = 2N per forward and 4N per backward "
        f"token; × baseline = total relative to {base}{shared_note}; max epochs = the most any run of the cell "
        "went over one domain's train split, above 1 it repeated data)", compute_table(compute, grid)),
        ("Epochs per domain of every run: tokens it trained on the domain / the domain's train tokens (above 1 the "
         "run repeated that domain's data; training windows are drawn at random, so these are expected passes)",
         epochs if epochs is not None else pd.DataFrame({"note": [
             "unknown: the runs have no log.csv or the data no tokens/meta.json"]}))])

    write_csv(collect.trajectories(config), out / "trajectories.csv")
    write_csv(collect_curves.curves(config), out / "curves.csv")
    write_csv(collect_curves.entropy(config), out / "entropy.csv")
    fits = collect_fits.fits(config)
    write_csv(fits, out / "fits.csv")
    write_sections(out, "fits", [(
        "Fits on a swarm of small runs (RegMix): the target regressed, the regressor, its Spearman rank correlation "
        "between observed and out-of-fold predicted targets over k folds of the swarm, and the mixture it chose "
        "(mean of the top-k of the sampled candidates), per seed", collect_fits.fits_table(fits))])
    write_csv(collect_fits.swarm(config), out / "swarm.csv")
    print(f"wrote {len(TABLE_NAMES) + len(CSV_ONLY)} tables ({len(ppl)} perplexity rows, {len(down)} downstream rows) "
          f"to {out}", flush=True)


main = config_command(aggregate, __doc__)


if __name__ == "__main__":
    main()
