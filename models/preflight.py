"""Check, before the first training job, what would otherwise fail hours into the grid.

    python -m models.preflight --config FILE [FILE ...] [--expect-gpu none|build|machine]
        [--parallel-runs N] [--download]

1. **Evaluation datasets**: every lm-eval registry task of ``downstream.tasks`` finds its dataset
   in the local datasets cache (evaluation runs offline; mixbench/eval_datasets.py). The
   generated tasks (mixbench_cloze, mixbench_choice) need nothing. ``--download``, on a machine
   with network, fills the cache first (then copy it, ``HF_DATASETS_CACHE`` or
   ``~/.cache/huggingface/datasets``, to the machine that runs the grid).
2. **GPUs** (mixbench/gpu_checks.py), at ``--expect-gpu``: ``machine`` (jobs run here: a CUDA
   build of torch, a driver it can use, a non-empty GPU pool), ``build`` (jobs run elsewhere, a
   SLURM submit host: the CUDA build only) or ``none``. Default: ``machine`` on
   ``training.device: cuda``, else ``none``. The workflow passes ``machine`` under profiles/gpu
   (or any ``--resources gpu=N``) and ``build`` under profiles/slurm, unless the device is cpu.
3. **Disk**: free space against the grid's estimated footprint, per part (mixbench/footprint.py);
   ``--parallel-runs``: runs training at once, which hold checkpoints (default 1).

Prints one line per check; every failure is one line naming what is missing and the command that
fixes it, all of them together, then exits 2. The workflow runs this before its first job (not
on a dry run): nothing trains until it passes.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
from pathlib import Path

from mixbench import eval_datasets, footprint
from mixbench.cli import add_config_argument, main_guard
from mixbench.errors import ConfigError, MixbenchError
from mixbench.gpu_checks import LEVELS, TorchFacts, gpu_problems, listed_gpus
from mixbench.gpus import gpu_pool
from strategies import grid_config
from strategies.runs import grid_runs


class PreflightError(MixbenchError):
    """One or more checks failed; the message lists every one."""


def dataset_checks(config: dict, config_args: str, cache_dir: Path | None, download: bool) -> tuple[list[str], list[str]]:
    tasks = eval_datasets.registry_tasks(config["downstream"]["tasks"])
    if not tasks:
        return ["datasets: none needed (generated downstream tasks only)"], []
    cache_dir = cache_dir or eval_datasets.default_cache_dir()  # imports datasets (~2 s): only when needed
    version = importlib.metadata.version("lm_eval")
    specs = eval_datasets.task_datasets(
        tasks, cache_file=Path(config["data_dir"]) / "lm_eval_tasks" / f"lm_eval-{version}-datasets.json")
    if download:
        eval_datasets.download(spec for task in tasks for spec in specs[task])
    problems = []
    for task in tasks:
        missing = [(spec, why) for spec in specs[task] if (why := eval_datasets.cache_problem(spec, cache_dir))]
        if len(missing) > 2:
            problems.append(f"datasets: task {task} needs {len(missing)} of its {len(specs[task])} datasets, not in "
                            f"the datasets cache {cache_dir} (first: {missing[0][0].describe()}); on a machine with "
                            f"network: python -m models.preflight --config {config_args} --download, then copy "
                            f"that cache here")
        for spec, why in missing if len(missing) <= 2 else []:
            if spec.path is None:  # a task written in Python: what it reads is not in its YAML
                problems.append(f"datasets: task {task} names no dataset_path, so its data cannot be checked "
                                f"offline; check it by hand (python -c \"from lm_eval.tasks import TaskManager; "
                                f"TaskManager().load(['{task}'])\" with HF_DATASETS_OFFLINE=1) or drop it from "
                                f"downstream.tasks")
                continue
            problems.append(f"datasets: task {task} needs {spec.describe()}, not in the datasets cache {cache_dir} "
                            f"({why}); on a machine with network: python -c \"import datasets; {spec.load_call()}\" "
                            f"(or python -m models.preflight --config {config_args} --download), then copy that "
                            f"cache here")
    count = sum(len(specs[t]) for t in tasks)
    line = f"datasets: {len(tasks)} registry task(s), {count} dataset(s), cache {cache_dir}"
    return [line + (": all cached" if not problems else f": {len(problems)} problem(s)")], problems


def expected_gpu_level(config: dict, asked: str | None) -> str:
    if asked is not None and asked not in LEVELS:
        raise ConfigError(f"the GPUs to expect (--expect-gpu, MIXBENCH_EXPECT_GPU) are one of {', '.join(LEVELS)}; "
                          f"got {asked!r}")
    if config["training"]["device"] == "cpu":
        return "none"
    if asked is not None:
        return asked
    return "machine" if config["training"]["device"] == "cuda" else "none"


def gpu_checks(level: str, device: str) -> tuple[list[str], list[str]]:
    if level == "none":
        why = "training.device cpu" if device == "cpu" else "--expect-gpu none"
        return [f"GPU: not checked ({why})"], []
    facts = TorchFacts.here()
    pool = gpu_pool() if level == "machine" else []
    problems = gpu_problems(level, facts, pool, listed_gpus() if level == "machine" else None)
    where = f", {len(pool)} GPU(s) for jobs" if level == "machine" else " (the GPUs are on the nodes)"
    build = f"CUDA {facts.cuda}" if facts.cuda else "CPU-only"
    return [f"GPU ({level}): torch {facts.version}, {build}{where}" + ("" if problems else ": ok")], problems


def preflight(config_files: list[str], *, expect_gpu: str | None = None, parallel_runs: int = 1,
              download: bool = False, datasets_cache: Path | None = None) -> tuple[list[str], list[str]]:
    """(the report's lines, every problem found)."""
    config = grid_config.load(*config_files)
    config_args = " ".join(config_files)
    lines, problems = [], []
    for found_lines, found_problems in (
            dataset_checks(config, config_args, datasets_cache, download),
            gpu_checks(expected_gpu_level(config, expect_gpu), config["training"]["device"]),
            footprint.shortfalls(footprint.estimate(config, footprint_runs(config), parallel_runs))):
        lines += found_lines
        problems += found_problems
    return lines, problems


def footprint_runs(config: dict) -> list[footprint.Run]:
    """Every training run of the grid once (a proxy shared by three final sizes is one run)."""
    seeds = len(config["grid"]["seeds"])
    return [footprint.Run(size, strategy, stage, run["steps"], seeds)
            for (size, strategy, stage), run in grid_runs(config).items()
            if run["steps"] > 0]  # a fit stage trains nothing


@main_guard
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m models.preflight", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--expect-gpu", choices=LEVELS, default=None,
                        help="what to check of the GPUs (default: machine on training.device cuda, else none)")
    parser.add_argument("--parallel-runs", type=int, default=1, help="runs training at once (their checkpoints)")
    parser.add_argument("--download", action="store_true",
                        help="download the registry tasks' datasets into the cache first (needs network)")
    args = parser.parse_args(argv)
    if args.parallel_runs < 1:
        parser.error("--parallel-runs must be at least 1")
    if not args.download:
        # Exactly what evaluation sees (eval/harness/lm.py forces it): no check may pass by reaching the hub.
        os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    lines, problems = preflight(args.config, expect_gpu=args.expect_gpu, parallel_runs=args.parallel_runs,
                                download=args.download)
    print("\n".join(lines), flush=True)
    if problems:
        raise PreflightError(f"preflight: {len(problems)} problem(s); nothing trains until they are fixed:\n"
                             + "\n".join(f"  - {p}" for p in problems))
    print("preflight: ok")


if __name__ == "__main__":
    main()
