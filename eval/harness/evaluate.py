"""Evaluate one saved model on everything the grid asks for, loading it once: the per-domain
perplexity tasks, then the downstream tasks (if any). The workflow's one evaluation job per model.

    python -m eval.harness.evaluate --model DIR --tasks-dir DIR --out DIR/perplexity.json
        [--downstream NAME [NAME ...] --downstream-out DIR/downstream.json --num-fewshot 0 --downstream-limit N]
        [--batch-size 16] [--device auto] [--limit N] [--threads N]

``--tasks-dir`` is the folder both task generators wrote (``eval.harness.tasks``, ``eval.harness.downstream_tasks``).
The two result files are exactly what ``python -m eval.harness.run`` and ``python -m eval.harness.downstream``
write, which remain for evaluating by hand.

Each downstream task is built and run on its own: one that fails (e.g. its dataset needs a
loading script, or is not in the offline cache) is logged as a warning and recorded under
``failed`` in the downstream file, and the job still succeeds. It fails only when every
downstream task failed, and then before the model loads if none could even be built.

Before anything is scored the model folder is checked (eval/harness/model_folder.py): its weights
must be safetensors (a pickle is never loaded), its tokenizer must fit the model's embedding and be
the one its run trained with (``RUN/run.json``'s ``inputs.tokenizer``; a run that recorded none
gets a warning). Both result files record ``lineage``: ``{"run": sha256 of RUN/run.json,
"tokenizer": tokenizer digest of the model folder}`` (mixbench/lineage.py).
"""

from __future__ import annotations

import sys
from typing import Sequence

from eval.harness.lm import log, make_lm, model_parser, set_threads  # first: sets the offline flags
from eval.harness.downstream import build_downstream, downstream_plan, score_downstream
from eval.harness.model_folder import check_model_files
from eval.harness.run import load_manifest, score_perplexity
from mixbench.cli import main_guard
from mixbench.io import write_json


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = model_parser("eval.harness.evaluate", __doc__,
                     "folder written by `python -m eval.harness.tasks` and `eval.harness.downstream_tasks`")
    p.add_argument("--downstream", nargs="*", default=[], metavar="NAME",
                   help="generated groups and/or lm-eval registry names (none: perplexity only)")
    p.add_argument("--downstream-out", help="downstream result JSON file (with --downstream)")
    p.add_argument("--num-fewshot", type=int, default=0)
    p.add_argument("--downstream-limit", type=int, default=None, help="only the first N examples per downstream task")
    a = p.parse_args(argv)
    if a.tasks_dir is None:
        p.error("--tasks-dir is required")
    if bool(a.downstream) != bool(a.downstream_out):
        p.error("--downstream and --downstream-out go together")
    set_threads(a.threads)
    # The model folder's files and every task are found before anything loads: a missing or unsafe
    # one fails in a second, not after scoring.
    check_model_files(a.model)
    manifest = load_manifest(a.tasks_dir)
    plan = downstream_plan(a.downstream, a.tasks_dir) if a.downstream else None
    # Each downstream task is built (its dataset read) on its own; one that cannot be is recorded
    # and skipped, and only when none can does the job stop, still before the model loads.
    built = build_downstream(plan) if plan is not None else None
    lm, settings = make_lm(a.model, a.device, a.batch_size)
    write_json(a.out, score_perplexity(a.model, lm, settings, manifest, a.limit))
    log(f"wrote {a.out}")
    if plan is not None:
        record = score_downstream(a.model, lm, settings, plan, a.downstream_limit, a.num_fewshot, built)
        write_json(a.downstream_out, record)
        log(f"wrote {a.downstream_out}" + (f" ({len(record['failed'])} failed task(s) under 'failed')"
                                           if record["failed"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
