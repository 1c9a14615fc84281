"""Evaluate a saved model on the generated per-domain perplexity tasks with lm-eval.

    python -m eval.harness.run --model DIR --tasks-dir DIR --out FILE.json
                       [--batch-size 16] [--device cpu|cuda|auto] [--limit N] [--threads N]

``--tasks-dir`` is the folder ``eval.harness.tasks`` wrote (``OUT/perplexity``, or ``OUT`` itself).
Scoring is lm-eval's own ``loglikelihood_rolling``; this module only loads the model, picks the
tasks and extracts per domain the metrics of eval/metrics.py.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Sequence

from eval.harness.lm import (kept_output, lm_eval_version, log, make_lm, model_parser,  # first: sets the offline flags
                             run_tasks, set_threads)
from eval.harness.model_folder import model_lineage
from eval.harness.tasks import MANIFEST, SUBDIR
from eval.metrics import HELDOUT_METRICS
from mixbench.cli import main_guard
from mixbench.errors import DataError, MixbenchError
from mixbench.io import read_json, write_json


def load_manifest(tasks_dir: str | Path, subdir: str = SUBDIR, generator: str = "eval.harness.tasks") -> dict[str, Any]:
    """Read a task generator's manifest and check that every data file is still there."""
    tasks_dir = Path(tasks_dir)
    if not tasks_dir.is_dir():
        raise DataError(f"tasks directory {tasks_dir} does not exist; run `python -m {generator}` first")
    path = next((p for p in (tasks_dir / MANIFEST, tasks_dir / subdir / MANIFEST) if p.is_file()), None)
    if path is None:
        raise DataError(f"no {MANIFEST} in {tasks_dir} or {tasks_dir / subdir}; "
                        f"run `python -m {generator}` to generate the tasks")
    manifest = read_json(path)
    manifest["tasks_dir"] = str(path.parent.resolve())
    for meta in _leaves(manifest["domains"]):
        if not Path(meta["data_file"]).is_file():
            raise DataError(f"data file {meta['data_file']} is missing; regenerate the tasks with `python -m {generator}`")
    return manifest


def _leaves(info: dict) -> list[dict]:
    """Per-task records of a manifest, flat or nested one level (per group, then per domain)."""
    return [v for v in info.values() if "data_file" in v] + [
        leaf for v in info.values() if "data_file" not in v for leaf in _leaves(v)]


def domain_metrics(output: dict[str, Any], task: str) -> dict[str, Any]:
    """Per-domain numbers from lm-eval's output (metrics are keyed ``"<metric>,<filter>"``)."""
    res = output["results"][task]
    unscored = [m.name for m in HELDOUT_METRICS if f"{m.name},none" not in res]
    if unscored:  # the task files were generated before these were listed in eval/metrics.py
        raise DataError(f"{task}: lm-eval computed no {', '.join(unscored)}: regenerate the task files "
                        "(`snakemake --cores all --forcerun lm_eval_tasks`, or `python -m eval.harness.tasks`)")
    metrics = {m.name: float(res[f"{m.name},none"]) for m in HELDOUT_METRICS}
    for m, v in metrics.items():
        if not math.isfinite(v):
            raise MixbenchError(f"{task}: {m} is {v}; the model produced non-finite log-likelihoods")
    metrics["documents"] = int(output["n-samples"][task]["effective"])
    return metrics


def evaluate(
    model_dir: str | Path,
    tasks_dir: str | Path,
    batch_size: int = 16,
    device: str = "auto",
    limit: int | None = None,
) -> dict[str, Any]:
    """Run lm-eval on every domain task listed in the manifest and return the result record."""
    manifest = load_manifest(tasks_dir)  # before loading the model: a missing task fails fast
    return score_perplexity(model_dir, *make_lm(model_dir, device, batch_size), manifest, limit)


def score_perplexity(model_dir: str | Path, lm, settings: dict, manifest: dict, limit: int | None) -> dict[str, Any]:
    """The perplexity record of an already loaded model (``make_lm``) on a task manifest; its
    ``lineage`` names the run and tokenizer it came from (eval/harness/model_folder.py)."""
    lineage = model_lineage(model_dir)  # before scoring: what was checked is what is recorded
    tasks = manifest["tasks"]
    log(f"tasks from {manifest['tasks_dir']}: " + ", ".join(
        f"{d} ({manifest['domains'][d]['documents']} docs)" for d in tasks))
    output = run_tasks(lm, tasks.values(), manifest["tasks_dir"], include_defaults=False, limit=limit)
    per_domain = {d: domain_metrics(output, t) for d, t in tasks.items()}
    for d, m in per_domain.items():
        log(f"{d}: " + ", ".join(f"{metric.name} {m[metric.name]:.4g}" for metric in HELDOUT_METRICS)
            + f" ({m['documents']} docs)")
    return {
        "model": str(model_dir),
        "lineage": lineage,
        "lm_eval_version": lm_eval_version(),
        "settings": {**settings, "limit": limit, "tasks_dir": manifest["tasks_dir"]},
        "tasks": per_domain,
        "lm_eval_results": kept_output(output),
    }


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = model_parser("eval.harness.run", __doc__, "folder written by `python -m eval.harness.tasks`")
    args = p.parse_args(argv)
    if args.tasks_dir is None:
        p.error("--tasks-dir is required")
    set_threads(args.threads)
    record = evaluate(args.model, args.tasks_dir, args.batch_size, args.device, args.limit)
    write_json(args.out, record)
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
