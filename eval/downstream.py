"""Evaluate a saved model on downstream tasks with lm-eval.

    python -m eval.downstream --model DIR --tasks NAME [NAME ...] --out FILE.json
        [--tasks-dir DIR] [--num-fewshot 0] [--batch-size 16] [--device auto] [--limit N] [--threads N]

A NAME is a group that ``eval.downstream_tasks`` generated (``mixbench_cloze``,
``mixbench_choice``; ``--tasks-dir`` is the folder it wrote) or any task or group of lm-eval's
registry (``piqa``, ``hellaswag``, ...; their datasets come from the local Hugging Face cache,
since evaluation runs offline). The result has one record per scored task: a group's subtasks
(e.g. one per domain) are recorded separately, with every metric and its standard error.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any, Sequence

from eval.lm import kept_output, lm_eval_version, log, make_lm, model_parser, run_tasks, set_threads  # first: sets the offline flags
from eval.downstream_tasks import SUBDIR
from eval.run import load_manifest
from eval.task_index import GENERATED
from mixbench.cli import main_guard
from mixbench.errors import ConfigError, MixbenchError
from mixbench.io import write_json


def leaf_tasks(output: dict[str, Any], name: str) -> list[str]:
    """The tasks lm-eval scored for a requested name: itself, or its (nested) subtasks."""
    subtasks = output.get("group_subtasks", {}).get(name)
    if not subtasks:
        return [name]
    return [leaf for sub in subtasks for leaf in leaf_tasks(output, sub)]


def task_metrics(output: dict[str, Any], task: str) -> dict[str, float]:
    """Every numeric metric of one task (lm-eval keys them ``"<metric>,<filter>"``), with its
    standard error under ``<metric>_stderr``."""
    metrics = {}
    for key, value in output["results"][task].items():
        if "," not in key or not isinstance(value, (int, float)):
            continue  # 'alias', and 'N/A' where a metric has no standard error
        metric, _filter = key.split(",", 1)
        metrics.setdefault(metric, float(value))
    for metric, value in metrics.items():
        if not metric.endswith("_stderr") and not math.isfinite(value):
            raise MixbenchError(f"{task}: {metric} is {value}; the model produced non-finite log-likelihoods")
    return metrics


def evaluate_downstream(
    model_dir: str | Path,
    tasks: Sequence[str],
    tasks_dir: str | Path | None = None,
    batch_size: int = 16,
    device: str = "auto",
    limit: int | None = None,
    num_fewshot: int = 0,
) -> dict[str, Any]:
    """Run lm-eval on the named tasks and return one record per scored task."""
    plan = downstream_plan(tasks, tasks_dir)  # before loading the model: a missing task fails fast
    return score_downstream(model_dir, *make_lm(model_dir, device, batch_size), plan, limit, num_fewshot)


def downstream_plan(tasks: Sequence[str], tasks_dir: str | Path | None) -> dict[str, Any]:
    """Where each task comes from: the generated groups' folder and domains, or lm-eval's registry."""
    if not tasks:
        raise ConfigError("no downstream task given")
    generated = [t for t in tasks if t in GENERATED]
    domain_of: dict[str, str] = {}
    include_path = None
    if generated:
        if tasks_dir is None:
            raise ConfigError(f"{generated} are generated tasks: give --tasks-dir (eval.downstream_tasks' output)")
        manifest = load_manifest(tasks_dir, SUBDIR, "eval.downstream_tasks")
        include_path = manifest["tasks_dir"]
        domain_of = {task: d for per_domain in manifest["groups"].values() for d, task in per_domain.items()}
    return {"tasks": list(tasks), "generated": generated, "include_path": include_path, "domain_of": domain_of}


def score_downstream(model_dir: str | Path, lm, settings: dict, plan: dict, limit: int | None,
                     num_fewshot: int) -> dict[str, Any]:
    """The downstream record of an already loaded model (``make_lm``)."""
    tasks, generated, include_path, domain_of = plan["tasks"], plan["generated"], plan["include_path"], plan["domain_of"]
    log(f"tasks: {', '.join(tasks)}" + (f" (generated ones from {include_path})" if include_path else ""))
    # Standard errors of means are closed-form; bootstrap_iters > 0 only switches them on.
    output = run_tasks(lm, tasks, include_path, include_defaults=len(generated) < len(tasks), limit=limit,
                       num_fewshot=num_fewshot, bootstrap_iters=1000)
    records = {}
    for name in tasks:
        for task in leaf_tasks(output, name):
            records[task] = {"group": name, "domain": domain_of.get(task), "metrics": task_metrics(output, task),
                             "examples": int(output["n-samples"][task]["effective"])}
            shown = ", ".join(f"{m} {v:.4f}" for m, v in records[task]["metrics"].items() if not m.endswith("_stderr"))
            log(f"{task}: {shown} ({records[task]['examples']} examples)")
    return {
        "model": str(model_dir),
        "lm_eval_version": lm_eval_version(),
        "settings": {**settings, "limit": limit, "num_fewshot": num_fewshot, "tasks_dir": include_path},
        "tasks": records,
        "lm_eval_results": kept_output(output),
    }


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = model_parser("eval.downstream", __doc__, "folder written by `python -m eval.downstream_tasks`")
    p.add_argument("--tasks", nargs="+", required=True, help="generated groups and/or lm-eval registry names")
    p.add_argument("--num-fewshot", type=int, default=0)
    a = p.parse_args(argv)
    set_threads(a.threads)
    record = evaluate_downstream(a.model, a.tasks, a.tasks_dir, a.batch_size, a.device, a.limit, a.num_fewshot)
    write_json(a.out, record)
    log(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
