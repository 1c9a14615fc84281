"""Step time and peak memory of each strategy against uniform, loop overhead, sampler speed.

    python -m benchmarks.throughput --config config/config.yaml [--strategies uniform doremi doge]
                                    [--size small] [--steps 5] [--batch-size 12 --seq-len 64]

Needs the token files of the config (run the workflow's data steps first). Each strategy runs
the stage where it does its work (DoReMi's and DoGE's proxy, the final run otherwise), with the
same model size and batch shape for every strategy. Stages before it (a reference model) are
stand-ins: a randomly initialised model of the stage's size, which costs the same to run.

Time: every strategy's loop is built in one process and the steps are interleaved, round by
round (uniform, the minimal step, then each strategy), so that machine noise hits all of them
alike; ``step_s`` is a median over ``--steps`` rounds. A signal that is not due at every step
(DoGraph's probes) is amortised explicitly: the steps of the configured run are grouped by which
signals are due, a step of each group is timed in every round (the loop is set to that step),
and ``step_s`` is the mean over the run weighted by each group's share of its steps.

Memory: each strategy again in a fresh process, so that its peak is its own: CUDA's max
allocated on a GPU, the process's peak RSS (VmHWM) on a CPU, over a few steps that include a
step of every group. ``extra_memory_copies`` is a strategy's peak above uniform's in units of
the model's parameter bytes.

The uniform row also has the minimal hand-written PyTorch step on the same model and batch
(``loop_overhead_ratio``) and how many sequences per second the sampler draws. Results are
ratios measured in one run, written to ``{results_dir}/benchmarks/throughput.json``; nothing
asserts.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpus.sampler import DomainSampler
from corpus.tokens import TokenStore, uncapped_train_tokens
from mixbench import config as cfg
from mixbench.cli import add_config_argument, main_guard
from mixbench.io import write_json
from mixbench.provenance import package_versions
from models.gpt2 import build_model, count_parameters, gpt2_config
from models.loop import LoopSettings, TrainingLoop
from models.signals.base import SignalSources
from strategies import StrategyContext, get_strategy_class


def minimal_step(model, optimizer, batch: torch.Tensor) -> None:
    """The reference: forward, mean cross-entropy, backward, clip, AdamW step."""
    logits = model(input_ids=batch[:, :-1]).logits
    F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten()).backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return -1


def working_stage(cls, hparams: dict) -> str:
    """The stage where the strategy computes its signals (its proxy), else final."""
    stages = cls.stages_for({**cls.defaults, **hparams})
    return "proxy" if "proxy" in stages else "final"


def stand_in_upstream(stages: tuple[str, ...], stage: str, model_config, scratch: Path) -> dict[str, Path]:
    """Every stage before ``stage`` as a finished-looking run: a random model, uniform weights."""
    upstream = {}
    for earlier in stages[: stages.index(stage)]:
        folder = scratch / earlier
        build_model(model_config).save_pretrained(folder / "model")
        upstream[earlier] = folder
    return upstream


def due_groups(strategy, total_steps: int) -> dict[frozenset, list[int]]:
    """The steps of a run grouped by the set of signals due at each."""
    groups: dict[frozenset, list[int]] = {}
    for step in range(1, total_steps + 1):
        due = frozenset(n for n in strategy.required_signals() if strategy.signal_due(n, step))
        groups.setdefault(due, []).append(step)
    return groups


class Subject:
    """One strategy's loop on its working stage, and its steps grouped by the signals due."""

    def __init__(self, config: dict, strategy_name: str, size: str, scratch: Path):
        training = config["training"]
        self.device = torch.device("cuda" if torch.cuda.is_available() and training["device"] != "cpu" else "cpu")
        data_dir = Path(config["data_dir"])
        domains = config["corpus"]["domains"]
        self.store = TokenStore(data_dir / "tokens", "train", domains)
        cls = get_strategy_class(cfg.strategy_class_name(config, strategy_name))
        hparams = cfg.strategy_hparams(config, strategy_name)
        stages = cls.stages_for({**cls.defaults, **hparams})
        self.stage = working_stage(cls, hparams)
        self.run_steps = cfg.stage_training(config, strategy_name, self.stage, size)["steps"]
        k = len(domains)
        self.model_config = gpt2_config(size, self.store.vocab_size)
        torch.manual_seed(0)
        upstream = stand_in_upstream(stages, self.stage, self.model_config, scratch)
        context = StrategyContext(name=strategy_name, domains=tuple(domains), stage=self.stage,
                                  total_steps=self.run_steps, seed=0, vocab_size=self.store.vocab_size,
                                  train_tokens=uncapped_train_tokens(data_dir, domains),
                                  warmup_steps=training["warmup_steps"],
                                  upstream_weights={s: np.full(k, 1 / k) for s in upstream})
        strategy = cls(context, **hparams)
        model = build_model(self.model_config).to(self.device)
        self.parameter_bytes = count_parameters(model) * 4
        settings = LoopSettings.from_config(training, steps=self.run_steps, device=self.device,
                                            bf16=self.device.type == "cuda" and training["precision"] != "fp32")
        (scratch / strategy_name).mkdir(parents=True, exist_ok=True)
        self.loop = TrainingLoop(model, strategy, DomainSampler(self.store, training["seq_len"], seed=0), settings,
                                 log_path=scratch / strategy_name / "log.csv",
                                 checkpoint_path=scratch / strategy_name / "checkpoint.pt", strategy_name=strategy_name,
                                 sources=SignalSources(data_dir=data_dir, seed=0, upstream=upstream,
                                                       run_dir=scratch / strategy_name))
        self.groups = due_groups(strategy, self.run_steps)
        self.lr = training["lr"]

    def timed_at(self, step: int) -> float:
        self.loop.step = step - 1  # the strategy decides what is due from the step number
        sync = torch.cuda.synchronize if self.device.type == "cuda" else (lambda: None)
        return timed(lambda: (self.loop.train_step(self.lr), sync()))

    def one_of_each_group(self) -> dict[frozenset, float]:
        return {due: self.timed_at(members[0]) for due, members in self.groups.items()}


def measure_memory(config: dict, strategy_name: str, size: str, scratch: Path) -> dict:
    subject = Subject(config, strategy_name, size, scratch)
    for _ in range(2):
        subject.one_of_each_group()
    return {"peak_memory_bytes": peak_memory_bytes(subject.device), "parameter_bytes": subject.parameter_bytes}


def measure_times(config: dict, names: list[str], size: str, rounds: int, scratch: Path) -> dict:
    training = config["training"]
    subjects = {name: Subject(config, name, size, scratch) for name in names}
    base = subjects["uniform"]
    torch.manual_seed(0)
    minimal_model = build_model(base.model_config).to(base.device)
    optimizer = torch.optim.AdamW(minimal_model.parameters(), lr=training["lr"])
    k = len(base.store.domains)
    batch = torch.from_numpy(DomainSampler(base.store, training["seq_len"], seed=1).sample(
        np.full(k, 1 / k), training["batch_size"])[0]).to(base.device)
    sync = torch.cuda.synchronize if base.device.type == "cuda" else (lambda: None)
    minimal = lambda: timed(lambda: (minimal_step(minimal_model, optimizer, batch), sync()))
    for subject in subjects.values():  # warm-up: allocations, lazy initialisation, compilation
        subject.one_of_each_group()
    minimal()
    samples = {name: [] for name in subjects}
    minimal_times = []
    for _ in range(rounds):
        minimal_times.append(minimal())
        for name, subject in subjects.items():
            samples[name].append(subject.one_of_each_group())
    results = {}
    for name, subject in subjects.items():
        per_group = {due: statistics.median(s[due] for s in samples[name]) for due in subject.groups}
        mean_step = sum(len(subject.groups[g]) * t for g, t in per_group.items()) / subject.run_steps
        results[name] = {
            "strategy": name, "stage": subject.stage, "device": str(subject.device), "run_steps": subject.run_steps,
            "step_s": mean_step,  # over the configured run: periodic work belongs in the cost of a step
            "step_groups": [{"signals": sorted(g), "steps_in_run": len(subject.groups[g]), "median_step_s": t}
                            for g, t in per_group.items()],
            "tokens_per_step": training["batch_size"] * training["seq_len"]}
    sampler = DomainSampler(base.store, training["seq_len"], seed=2)
    sample = [timed(lambda: sampler.sample(np.full(k, 1 / k), training["batch_size"])) for _ in range(200)]
    results["uniform"].update(minimal_step_s=statistics.median(minimal_times),
                              loop_overhead_ratio=results["uniform"]["step_s"] / statistics.median(minimal_times),
                              sampler_sequences_per_s=training["batch_size"] / statistics.median(sample))
    return results


SHAPE_OPTIONS = ("batch_size", "micro_batch_size", "seq_len", "threads")


def run_all(config_files: list[str], config: dict, strategies: list[str], size: str, rounds: int, out_dir: Path,
            shape: dict[str, int]) -> dict:
    shape_args = [arg for key, value in shape.items() for arg in (f"--{key.replace('_', '-')}", str(value))]
    memory = {}
    for name in strategies:  # a fresh process each: peak memory must be the strategy's own
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "benchmarks.throughput", "--config", *config_files, "--size", size,
                   *shape_args, "--memory-of", name, "--scratch", tmp]
            print(f"peak memory of {name} ...", file=sys.stderr, flush=True)
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"measuring {name} failed:\n{done.stderr[-3000:]}")
            memory[name] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"step times, {rounds} interleaved rounds ...", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        times = measure_times(config, strategies, size, rounds, Path(tmp))
    results = {name: {**times[name], **memory[name]} for name in strategies}
    base = results["uniform"]
    summary = {name: {"step_time_vs_uniform": r["step_s"] / base["step_s"],
                      "peak_memory_vs_uniform": r["peak_memory_bytes"] / base["peak_memory_bytes"],
                      "extra_memory_copies":
                          (r["peak_memory_bytes"] - base["peak_memory_bytes"]) / r["parameter_bytes"],
                      "tokens_per_s": r["tokens_per_step"] / r["step_s"], **r}
               for name, r in results.items()}
    report = {"size": size, "rounds": rounds, "shape": shape, "cpus": os.cpu_count(),
              "strategies": summary, "versions": package_versions()}
    write_json(out_dir / "throughput.json", report)
    return report


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--size", default=None, help="model size (default: the grid's first)")
    parser.add_argument("--steps", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--strategies", nargs="+", default=None, help="default: uniform plus the grid's strategies")
    for key in SHAPE_OPTIONS:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"override training.{key}")
    parser.add_argument("--memory-of", help=argparse.SUPPRESS)  # internal: one strategy's peak memory, as JSON
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    shape = {key: getattr(args, key) for key in SHAPE_OPTIONS if getattr(args, key) is not None}
    config = cfg.load(*args.config, overrides={"training": shape})
    size = args.size or config["grid"]["sizes"][0]
    if config["training"]["device"] != "cuda":
        torch.set_num_threads(config["training"]["threads"])
    if args.memory_of:
        print(json.dumps(measure_memory(config, args.memory_of, size, Path(args.scratch))))
        return
    names = list(dict.fromkeys(["uniform", *(args.strategies or config["grid"]["strategies"])]))
    report = run_all(args.config, config, names, size, args.steps, Path(config["results_dir"]) / "benchmarks", shape)
    for name, r in report["strategies"].items():
        print(f"{name:>10} ({r['stage']}): {r['step_s']:.3f} s/step = {r['step_time_vs_uniform']:.2f}x uniform, "
              f"peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB = {r['peak_memory_vs_uniform']:.2f}x "
              f"(+{r['extra_memory_copies']:.2f} parameter copies)")
        for group in r["step_groups"] if len(r["step_groups"]) > 1 else []:
            print(f"{'':>12}{group['steps_in_run']} of {r['run_steps']} steps with signals {group['signals']}: "
                  f"{group['median_step_s']:.3f} s/step")
    uniform = report["strategies"]["uniform"]
    print(f"loop vs minimal PyTorch step: {uniform['loop_overhead_ratio']:.3f}x; "
          f"sampler {uniform['sampler_sequences_per_s']:.0f} sequences/s")


if __name__ == "__main__":
    main()
