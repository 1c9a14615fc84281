"""Step time and peak memory of each strategy against uniform, loop overhead, sampler speed.

    python -m benchmarks.throughput --config config/config.yaml [--strategies uniform doremi doge]
                                    [--size tiny] [--steps 20]

Needs the token files of the config (run the workflow's data steps first). Each strategy is
measured in a fresh process (so peak memory is its own) on the stage where it does its work
(DoReMi's and DoGE's proxy, the final run otherwise). The uniform process also times a
minimal hand-written PyTorch step on the same model and batch, alternating the two so machine
noise hits both alike, and how many sequences per second the sampler draws. Results are ratios
measured in one run, written to ``{results_dir}/benchmarks/throughput.json``; nothing asserts.
Peak memory is CUDA's max allocated on a GPU, the process's peak RSS (VmHWM) on a CPU.
"""

from __future__ import annotations

import argparse
import json
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
from models.gpt2 import build_model, gpt2_config
from models.loop import LoopSettings, TrainingLoop
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


def measure_one(config: dict, strategy_name: str, size: str, steps: int, scratch: Path) -> dict:
    training = config["training"]
    device = torch.device("cuda" if torch.cuda.is_available() and training["device"] != "cpu" else "cpu")
    torch.set_num_threads(training["threads"])
    data_dir = Path(config["data_dir"])
    domains = config["corpus"]["domains"]
    store = TokenStore(data_dir / "tokens", "train", domains)
    cls = get_strategy_class(cfg.strategy_class_name(config, strategy_name))
    hparams = cfg.strategy_hparams(config, strategy_name)
    stage = working_stage(cls, hparams)
    k = len(domains)
    context = StrategyContext(name=strategy_name, domains=tuple(domains), stage=stage, total_steps=10**6, seed=0,
                              train_tokens=uncapped_train_tokens(data_dir, domains), vocab_size=store.vocab_size,
                              upstream_weights={"proxy": np.full(k, 1 / k)})
    strategy = cls(context, **hparams)
    model_config = gpt2_config(size, store.vocab_size)
    torch.manual_seed(0)
    model = build_model(model_config).to(device)
    reference = build_model(model_config).to(device).eval() if "reference_token_loss" in strategy.required_signals() else None
    target = None
    if "target_gradient" in strategy.required_signals() and strategy.target_batch() is not None:
        target = DomainSampler(TokenStore(data_dir / "tokens", strategy.target_batch()[0], domains),
                               training["seq_len"], seed=0, stream=1000)
    probes = None
    if "example_gradient_features" in strategy.required_signals():
        probes = (DomainSampler(store, training["seq_len"], seed=0, stream=2000),
                  DomainSampler(TokenStore(data_dir / "tokens", "val", domains), training["seq_len"], seed=0, stream=3000))
    settings = LoopSettings.from_config(training, steps=10**6, device=device,
                                        bf16=device.type == "cuda" and training["precision"] != "fp32")
    loop = TrainingLoop(model, strategy, DomainSampler(store, training["seq_len"], seed=0), settings,
                        scratch / "log.csv", scratch / "checkpoint.pt", strategy_name,
                        reference_model=reference, target_sampler=target, probe_samplers=probes)
    lr = training["lr"]
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for _ in range(2):
        loop.train_step(lr)
    ours = [timed(lambda: (loop.train_step(lr), sync())) for _ in range(steps)]
    result = {"strategy": strategy_name, "stage": stage, "device": str(device),
              # The mean, not the median: periodic work (DoGraph's probes) belongs in the cost of a step.
              "step_s": statistics.mean(ours), "median_step_s": statistics.median(ours),
              "peak_memory_bytes": peak_memory_bytes(device)}
    if strategy_name == "uniform":
        result.update(minimal_and_sampler(store, model_config, training, device, steps, ours))
    return result


def minimal_and_sampler(store, model_config, training, device, steps, ours_first) -> dict:
    torch.manual_seed(0)
    reference = build_model(model_config).to(device)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=training["lr"])
    k = len(store.domains)
    batch = torch.from_numpy(DomainSampler(store, training["seq_len"], seed=1).sample(
        np.full(k, 1 / k), training["batch_size"])[0]).to(device)
    for _ in range(2):
        minimal_step(reference, optimizer, batch)
    minimal = [timed(lambda: minimal_step(reference, optimizer, batch)) for _ in range(steps)]
    sampler = DomainSampler(store, training["seq_len"], seed=2)
    sample = [timed(lambda: sampler.sample(np.full(k, 1 / k), training["batch_size"])) for _ in range(200)]
    return {"minimal_step_s": statistics.median(minimal),
            "loop_overhead_ratio": statistics.median(ours_first) / statistics.median(minimal),
            "sampler_sequences_per_s": training["batch_size"] / statistics.median(sample)}


def run_all(config_files: list[str], strategies: list[str], size: str, steps: int, out_dir: Path) -> dict:
    results = {}
    for name in strategies:  # a fresh process each: peak memory must be the strategy's own
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, "-m", "benchmarks.throughput", "--config", *config_files, "--size", size,
                   "--steps", str(steps), "--one", name, "--scratch", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"measuring {name} failed:\n{done.stderr[-3000:]}")
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
    base = results["uniform"]
    summary = {name: {"step_time_vs_uniform": r["step_s"] / base["step_s"],
                      "peak_memory_vs_uniform": r["peak_memory_bytes"] / base["peak_memory_bytes"], **r}
               for name, r in results.items()}
    report = {"size": size, "steps_timed": steps, "strategies": summary, "versions": package_versions()}
    write_json(out_dir / "throughput.json", report)
    return report


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--size", default=None, help="model size (default: the grid's first)")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--strategies", nargs="+", default=None, help="default: uniform plus the grid's strategies")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: measure one strategy, print JSON
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    config = cfg.load(*args.config)
    size = args.size or config["grid"]["sizes"][0]
    if args.one:
        print(json.dumps(measure_one(config, args.one, size, args.steps, Path(args.scratch))))
        return
    names = list(dict.fromkeys(["uniform", *(args.strategies or config["grid"]["strategies"])]))
    report = run_all(args.config, names, size, args.steps, Path(config["results_dir"]) / "benchmarks")
    for name, r in report["strategies"].items():
        print(f"{name:>10} ({r['stage']}): {r['step_s']:.3f} s/step = {r['step_time_vs_uniform']:.2f}x uniform, "
              f"peak memory {r['peak_memory_bytes'] / 2**20:.0f} MiB = {r['peak_memory_vs_uniform']:.2f}x")
    uniform = report["strategies"]["uniform"]
    print(f"loop vs minimal PyTorch step: {uniform['loop_overhead_ratio']:.3f}x; "
          f"sampler {uniform['sampler_sequences_per_s']:.0f} sequences/s")


if __name__ == "__main__":
    main()
