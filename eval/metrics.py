"""The held-out metrics: one list read by task generation, scoring, collection and the tables.

Each final model is scored on every domain's held-out test split by lm-eval's
``loglikelihood_rolling``, which computes these metrics of a document set:

- task generation (eval/harness/tasks.py) writes each one, with its aggregation, into every
  task's ``metric_list``;
- scoring (eval/harness/run.py) reads each one back from lm-eval's output into
  ``perplexity.json`` under its ``name``;
- collection (eval/analysis/collect.py) turns ``perplexity.json`` into ``perplexity.csv``, one
  column per metric, named ``column``;
- the tables (eval/analysis/result_tables.py) show each metric that has a ``label`` as a
  section of ``perplexity.md`` with its ``number_format``; the ``primary`` one is compared between
  strategies (comparison table, figures, README results).

How to add a held-out metric
----------------------------
1. Add a ``HeldOutMetric`` line to ``HELDOUT_METRICS`` below (lm-eval must compute it for
   ``loglikelihood_rolling`` tasks: ``name`` and ``aggregation`` are lm-eval's names).
2. Say what it measures in docs/results.md.
3. Record the perplexity tables' new bytes: the fixture grids' perplexity.csv gains its column
   (and with a ``label`` perplexity.md/.tex/.html a section), so tests/test_figures.py fails once
   and prints their new entries for tests/fixtures/table_digests.json.
Those are the three files: its task YAML entry, its score in perplexity.json, its column and its
table section follow from the line; tests/run_fixture.py writes every listed metric, and
tests/test_eval.py already checks every listed metric end to end (task files, a real lm-eval
run, finite values). A hand-computed check there, as bits per byte's, is worth adding where one
exists. Finished evaluations hold only the metrics they were scored with (the tables stop with
one line naming the file and the metric): ``snakemake --cores all --forcerun lm_eval_tasks``
regenerates the tasks and reruns every evaluation after them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HeldOutMetric:
    name: str  # lm-eval's metric name, also the key in perplexity.json
    aggregation: str  # lm-eval's aggregation over documents (spelled out: lm-eval warns on defaults)
    column: str  # the column of perplexity.csv
    label: str | None = None  # names its section of perplexity.md and its comparison rows; None: CSV only
    number_format: str = ".4f"  # of the mean ± std cells of that section
    primary: bool = False  # the metric strategies are compared on (one only)
    higher_is_better: bool = False


HELDOUT_METRICS: tuple[HeldOutMetric, ...] = (
    # Bits per byte is the tokenizer-independent number to compare.
    HeldOutMetric(name="bits_per_byte", aggregation="bits_per_byte", column="bits_per_byte",
                  label="bits per byte", number_format=".4f", primary=True),
    # Word perplexities of a small model span orders of magnitude across domains: significant digits.
    HeldOutMetric(name="word_perplexity", aggregation="weighted_perplexity", column="perplexity",
                  label="word perplexity", number_format=".4g"),
    HeldOutMetric(name="byte_perplexity", aggregation="weighted_perplexity", column="byte_perplexity"),
)
PRIMARY = next(m for m in HELDOUT_METRICS if m.primary)
