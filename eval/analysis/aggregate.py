"""Collect finished runs into the result tables.

    python -m eval.analysis.aggregate --config config/config.yaml

Writes to ``{results_dir}/tables/`` (every ``.md`` also as ``.tex`` and ``.html``):

- ``perplexity.csv`` (long: size, strategy, seed, domain, the held-out metrics of eval/metrics.py:
  bits per byte, word and byte perplexity; the sha256 of the perplexity.json, ``evaluation``; provenance) and ``perplexity.md``: mean ± std over
  seeds per strategy and domain, with the macro average over domains and the worst domain;
- ``downstream.csv`` (long: one row per task, subtask, metric and seed) and ``downstream.md``:
  each task's macro average over its subtasks, then the generated tasks per domain;
- ``comparison.csv``/``.md``: every strategy against the baseline (uniform) on the same seeds,
  per summary and per domain or subtask: the mean difference, its paired t 95% interval, the
  exact sign-flip p, the Holm-adjusted p, the minimum detectable difference, the seeds needed,
  and wins over domains or subtasks (eval/analysis/stats.py);
- ``weights.csv``/``.md``: the mixture each final model trained on;
- ``compute.csv``/``.md``: FLOPs per stage (reference and proxy runs included), tokens, wall time,
  and the data budget: tokens trained and epochs per domain of every run (``epochs/<domain>``);
- ``trajectories.csv``: the mixture of every stage whose mixture changes, per step, from the runs'
  log.csv (for DoReMi's and DoGE's proxies: sampling times loss weights, their α), and DoReMi's
  per-domain excess losses;
- ``curves.csv``: the held-out loss per domain of every stage over training, with tokens, FLOPs
  and the FLOPs of the stages before it (eval/analysis/collect_curves.py);
- ``entropy.csv``: the entropy of every stage's mixture over its steps;
- ``fits.csv``/``.md``: every ``fit`` stage (RegMix): target, regressor, its k-fold Spearman ρ per
  seed and the mixture it chose; ``swarm.csv``: every run it fitted on (eval/analysis/collect_fits.py);
  only in a grid with a fit stage.

Only the cells whose runs and evaluations were made by this config from this data are read
(eval/analysis/grid_check.py): every run or evaluation left out, or not finished, has one line on
stderr (the tables job's log), and on an unfinished grid each table names its missing cells (a
last line in the views, a row per cell in the CSVs: eval/analysis/partial.py).

Which tables a grid has, and how each is written, is eval/analysis/table_registry.py; the
held-out metrics and how each is shown, eval/metrics.py.
"""

from __future__ import annotations

from eval.analysis.outputs import load
from eval.analysis.result_tables import Results
from eval.analysis.table_registry import REGISTRY, table_names
from mixbench.cli import config_command
from strategies import grid_config


def aggregate(config: dict) -> None:
    results = Results(config)
    names = table_names(config)
    for name in names:
        load(REGISTRY, name, "table")(results)
    print(f"wrote {len(names)} tables ({len(results.perplexity)} perplexity rows, {len(results.downstream)} "
          f"downstream rows) to {results.out}", flush=True)


main = config_command(aggregate, __doc__, load=grid_config.load)


if __name__ == "__main__":
    main()
