"""Evaluate a saved model on downstream tasks with lm-eval.

    python -m eval.harness.downstream --model DIR --tasks NAME [NAME ...] --out FILE.json
        [--tasks-dir DIR] [--num-fewshot 0] [--batch-size 16] [--device auto] [--limit N] [--threads N]

A NAME is a group that ``eval.harness.downstream_tasks`` generated (``mixbench_cloze``,
``mixbench_choice``; ``--tasks-dir`` is the folder it wrote) or any task or group of lm-eval's
registry (``piqa``, ``hellaswag``, ...; their datasets come from the local Hugging Face cache,
since evaluation runs offline). The result has one record per scored task: a group's subtasks
(e.g. one per domain) are recorded separately, with every metric and its standard error.

Each NAME is built and run on its own, so one that cannot load its dataset (a script-based
Hugging Face dataset, one missing from the offline cache) or fails while scoring does not take
the others with it: it is logged as a warning and recorded under ``failed`` (stage, exception
class, one-line message), and the result tables show no number for it. The command fails only
when every NAME failed.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from eval.harness.lm import (KEPT_KEYS, kept_output, lm_eval_version, log, make_lm,  # first: sets the offline flags
                             model_parser, run_tasks, set_threads, task_manager)
from eval.harness.downstream_tasks import SUBDIR
from eval.harness.model_folder import model_lineage
from eval.harness.run import load_manifest
from eval.harness.task_index import GENERATED
from mixbench.cli import main_guard
from mixbench.errors import ConfigError, MixbenchError
from mixbench.io import write_json


def leaf_tasks(output: dict[str, Any], name: str) -> list[str]:
    """The tasks lm-eval scored for a requested name: itself, or its (nested) subtasks."""
    subtasks = output.get("group_subtasks", {}).get(name)
    if not subtasks:
        if name not in output["results"]:  # a tag: every task of this name's own run
            return [t for t in output["results"] if t not in output.get("group_subtasks", {})]
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
    built = build_downstream(plan)  # so does a job whose every task fails to load
    return score_downstream(model_dir, *make_lm(model_dir, device, batch_size), plan, limit, num_fewshot, built)


def downstream_plan(tasks: Sequence[str], tasks_dir: str | Path | None) -> dict[str, Any]:
    """Where each task comes from: the generated groups' folder and domains, or lm-eval's registry."""
    if not tasks:
        raise ConfigError("no downstream task given")
    generated = [t for t in tasks if t in GENERATED]
    domain_of: dict[str, str] = {}
    include_path = None
    if generated:
        if tasks_dir is None:
            raise ConfigError(f"{generated} are generated tasks: give --tasks-dir (eval.harness.downstream_tasks' output)")
        manifest = load_manifest(tasks_dir, SUBDIR, "eval.harness.downstream_tasks")
        include_path = manifest["tasks_dir"]
        domain_of = {task: d for per_domain in manifest["groups"].values() for d, task in per_domain.items()}
    return {"tasks": list(tasks), "generated": generated, "include_path": include_path, "domain_of": domain_of}


def build_downstream(plan: dict) -> dict[str, Any]:
    """Build every task of the plan on its own (its config and dataset), before the model loads.

    A task that cannot be built is recorded as failed and the others go on; only when none can
    be built is it an error. Returns the task index, each built task's lm-eval objects and the
    failures."""
    tasks, include_path = plan["tasks"], plan["include_path"]
    log(f"tasks: {', '.join(tasks)}" + (f" (generated ones from {include_path})" if include_path else ""))
    manager = task_manager(include_path, include_defaults=len(plan["generated"]) < len(tasks))
    built, failed = {}, {}
    for name in tasks:
        try:
            loaded = manager.load([name])
        except Exception as exc:  # noqa: BLE001 - any failure of one task must spare the others
            failed[name] = task_failure(name, "load", exc, dataset_of(manager, name))
            warn_failed(name, failed[name])
            continue
        # What lm-eval needs to run the name again without rebuilding it: its group, or its task(s).
        built[name] = [loaded["groups"][name]] if name in loaded["groups"] else list(loaded["tasks"].values())
    if not built:
        raise all_failed(failed)
    return {"manager": manager, "built": built, "failed": failed}


def score_downstream(model_dir: str | Path, lm, settings: dict, plan: dict, limit: int | None,
                     num_fewshot: int, built: dict[str, Any] | None = None) -> dict[str, Any]:
    """The downstream record of an already loaded model (``make_lm``): each task runs on its own,
    and one that fails is recorded under ``failed`` instead of ending the job."""
    tasks, include_path, domain_of = plan["tasks"], plan["include_path"], plan["domain_of"]
    lineage = model_lineage(model_dir)  # the run and tokenizer the record comes from, read before scoring
    if built is None:
        built = build_downstream(plan)
    failed = dict(built["failed"])
    records, outputs = {}, []
    for name in tasks:
        if name not in built["built"]:
            continue
        try:
            # Standard errors of means are closed-form; bootstrap_iters > 0 only switches them on.
            output = run_tasks(lm, built["built"][name], manager=built["manager"], limit=limit,
                               num_fewshot=num_fewshot, bootstrap_iters=1000)
            scored = {task: {"group": name, "domain": domain_of.get(task), "metrics": task_metrics(output, task),
                             "examples": int(output["n-samples"][task]["effective"])}
                      for task in leaf_tasks(output, name)}
        except Exception as exc:  # noqa: BLE001 - likewise while scoring
            failed[name] = task_failure(name, "run", exc, dataset_of(built["manager"], name))
            warn_failed(name, failed[name])
            continue
        outputs.append(output)
        for task, record in scored.items():
            shown = ", ".join(f"{m} {v:.4f}" for m, v in record["metrics"].items() if not m.endswith("_stderr"))
            log(f"{task}: {shown} ({record['examples']} examples)")
        records.update(scored)
    if not records:
        raise all_failed(failed)
    if failed:
        log(f"WARNING: {len(failed)} of {len(tasks)} downstream tasks failed ({', '.join(failed)}); the others' "
            "results are kept, and the failures are listed under 'failed' in the result")
    return {
        "model": str(model_dir),
        "lineage": lineage,
        "lm_eval_version": lm_eval_version(),
        "settings": {**settings, "limit": limit, "num_fewshot": num_fewshot, "tasks_dir": include_path},
        "tasks": records,
        "failed": {name: failed[name] for name in tasks if name in failed},
        "lm_eval_results": kept_output(merged_output(outputs)),
    }


def merged_output(outputs: list[dict[str, Any]]) -> dict[str, Any]:
    """The parts of several lm-eval runs that the record keeps, as if from one run."""
    merged: dict[str, Any] = {}
    for output in outputs:
        for key in KEPT_KEYS:
            if isinstance(output.get(key), dict):
                merged.setdefault(key, {}).update(output[key])
            elif key in output:
                merged[key] = output[key]
    return merged


def dataset_of(manager, name: str) -> str | None:
    """The Hugging Face dataset a registry task reads (None for a group, or when unknown)."""
    entry = manager.task_index.get(name)
    task = getattr(entry, "cfg", None) or {}  # the task's lm-eval config
    path = task.get("dataset_path")
    return str(path) if path else None


SCRIPT_ERROR = "Dataset scripts are no longer supported"
OFFLINE_ERRORS = ("OfflineModeIsEnabled", "is not cached", "Couldn't reach")


def task_failure(name: str, stage: str, exc: BaseException, dataset: str | None = None) -> dict[str, str]:
    """What downstream.json records of a failed task: the stage (``load``: building the task and
    reading its dataset, ``run``: scoring), the exception class and a one-line message."""
    chain = [exc]
    while (cause := chain[-1].__cause__ or chain[-1].__context__) is not None and cause not in chain:
        chain.append(cause)
    texts = [first_line(e) for e in chain]
    message = texts[0] or type(exc).__name__
    if dataset is None:
        quoted = [m.group(1) for t in texts for m in [re.search(r"'([\w.-]+/[\w.-]+)'", t)] if m]
        dataset = quoted[0] if quoted else None
    what = f"dataset {dataset}" if dataset else f"a dataset of {name}"
    if any(SCRIPT_ERROR in t for t in texts):
        import datasets

        message = (f"{what} uses a loading script, which datasets {datasets.__version__} no longer runs "
                   f"({next(t for t in texts if SCRIPT_ERROR in t)})")
    elif any(marker in t for t in texts for marker in OFFLINE_ERRORS):
        message = (f"{message}: {what} is not in the local Hugging Face cache, and evaluation runs offline; "
                   "fill the cache on a machine with network access (docs/paper-grid.md, \"Before the first run\")")
    else:  # the nearest cause that says more, e.g. the parse error under "An error occurred while generating"
        cause = next(((e, t) for e, t in zip(chain[1:], texts[1:]) if t and t not in message), None)
        if cause is not None:
            message = f"{message} (caused by {type(cause[0]).__name__}: {cause[1]})"
    return {"stage": stage, "exception": type(exc).__name__, "message": message}


def first_line(exc: BaseException, limit: int = 300) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    return text if len(text) <= limit else text[:limit - 1] + "…"


def warn_failed(name: str, failure: dict[str, str]) -> None:
    log(f"WARNING: downstream task {name} failed to {failure['stage']}: {failure['exception']}: "
        f"{failure['message']}; the other tasks go on, and its table cells stay empty")


def all_failed(failed: dict[str, dict[str, str]]) -> MixbenchError:
    details = "; ".join(f"{name} ({f['stage']}): {f['exception']}: {f['message']}" for name, f in failed.items())
    return MixbenchError(f"every downstream task failed, so there is no downstream result to write: {details}")


@main_guard
def main(argv: Sequence[str] | None = None) -> int:
    p = model_parser("eval.harness.downstream", __doc__, "folder written by `python -m eval.harness.downstream_tasks`")
    p.add_argument("--tasks", nargs="+", required=True, help="generated groups and/or lm-eval registry names")
    p.add_argument("--num-fewshot", type=int, default=0)
    a = p.parse_args(argv)
    set_threads(a.threads)
    record = evaluate_downstream(a.model, a.tasks, a.tasks_dir, a.batch_size, a.device, a.limit, a.num_fewshot)
    write_json(a.out, record)
    log(f"wrote {a.out}" + (f" ({len(record['failed'])} failed task(s) under 'failed')" if record["failed"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
