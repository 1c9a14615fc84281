"""Score the models of many runs on the perplexity tasks in one process: the landscape study's
lattice runs (strategies/lattice.py), which are too many for one evaluation job each.

    python -m eval.harness.score_runs --runs RUN [RUN ...] --tasks-dir DIR --out MARKER.json
        [--batch-size 16] [--device auto] [--threads N]

Each run's ``RUN/eval/perplexity.json`` is exactly what ``eval.harness.evaluate`` writes for a
final model (the same lm-eval tasks, scoring and checks), so a lattice mixture's bits per byte
compare with a strategy's. A run whose file exists and records the run's current run.json
(``lineage.run``) is not scored again: a stopped job resumes where it was. The marker lists the
runs and their files once every one is scored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

from eval.harness.lm import log, make_lm, model_parser, set_threads  # first: sets the offline flags
from eval.harness.model_folder import check_model_files
from eval.harness.run import load_manifest, score_perplexity
from mixbench.cli import main_guard
from mixbench.io import read_json, write_json
from mixbench.lineage import run_digest

RESULT = Path("eval") / "perplexity.json"


def already_scored(run: Path) -> bool:
    """Its perplexity.json exists and was scored on the model of the run.json there now."""
    result = run / RESULT
    if not result.is_file():
        return False
    return (read_json(result).get("lineage") or {}).get("run") == run_digest(run)


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = model_parser("eval.harness.score_runs", __doc__, "folder written by `python -m eval.harness.tasks`",
                     one_model=False)
    p.add_argument("--runs", nargs="+", required=True, metavar="RUN", help="run folders, each with a model/")
    a = p.parse_args(argv)
    if a.tasks_dir is None:
        p.error("--tasks-dir is required")
    set_threads(a.threads)
    runs = [Path(r) for r in a.runs]
    for run in runs:  # every folder checked before the first model loads
        check_model_files(run / "model")
    manifest = load_manifest(a.tasks_dir)
    todo = [run for run in runs if not already_scored(run)]
    log(f"{len(runs) - len(todo)} of {len(runs)} runs already scored; scoring {len(todo)}")
    for index, run in enumerate(todo, 1):
        lm, settings = make_lm(run / "model", a.device, a.batch_size)
        write_json(run / RESULT, score_perplexity(run / "model", lm, settings, manifest, a.limit))
        log(f"[{index}/{len(todo)}] wrote {run / RESULT}")
    write_json(a.out, {"scored": [str(run / RESULT) for run in runs]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
