"""Training-loop overhead and sampler throughput, measured in one process.

    python -m benchmarks.throughput --config config/config.yaml [--size tiny] [--steps 20]

Needs the token files of the config (run the workflow's data steps first). Compares
mixbench's training step (sampler + strategy signals + logging-free step) against a minimal
hand-written PyTorch step on the same model and batch shape, alternating the two so machine
noise hits both alike, and measures how many sequences per second the sampler draws.
Writes ``{results_dir}/benchmarks/throughput.json``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from corpus.sampler import DomainSampler
from corpus.tokens import TokenStore
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
    loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def run(config: dict, size: str, steps: int, out_dir: Path) -> dict:
    training = config["training"]
    torch.set_num_threads(training["threads"])
    store = TokenStore(Path(config["data_dir"]) / "tokens", "train", config["corpus"]["domains"])
    model_config = gpt2_config(size, store.vocab_size)
    settings = LoopSettings.from_config(training, steps=10**6)
    context = StrategyContext(name="uniform", domains=tuple(store.domains), train_tokens=store.token_counts(),
                              stage="final", total_steps=steps, seed=0, vocab_size=store.vocab_size)
    torch.manual_seed(0)
    loop = TrainingLoop(build_model(model_config), get_strategy_class("uniform")(context),
                        DomainSampler(store, training["seq_len"], seed=0), settings,
                        out_dir / "scratch-log.csv", out_dir / "scratch-checkpoint.pt", "uniform")
    torch.manual_seed(0)
    reference = build_model(model_config)
    optimizer = torch.optim.AdamW(reference.parameters(), lr=training["lr"])
    batch = torch.from_numpy(DomainSampler(store, training["seq_len"], seed=1).sample(
        np.full(len(store.domains), 1 / len(store.domains)), training["batch_size"])[0])
    ours, minimal = [], []
    for _ in range(2):  # warm-up of both
        loop.train_step(training['lr'])
        minimal_step(reference, optimizer, batch)
    for _ in range(steps):  # alternate, so drifts in machine load hit both
        ours += timed(lambda: loop.train_step(training['lr']), 1)
        minimal += timed(lambda: minimal_step(reference, optimizer, batch), 1)
    sampler = DomainSampler(store, training["seq_len"], seed=2)
    weights = np.full(len(store.domains), 1 / len(store.domains))
    sample_times = timed(lambda: sampler.sample(weights, training["batch_size"]), 200)
    result = {
        "size": size, "batch_size": training["batch_size"], "seq_len": training["seq_len"],
        "threads": training["threads"], "steps_timed": steps,
        "mixbench_step_s": statistics.median(ours), "minimal_step_s": statistics.median(minimal),
        "overhead_ratio": statistics.median(ours) / statistics.median(minimal),
        "sampler_sequences_per_s": training["batch_size"] / statistics.median(sample_times),
        "sampler_share_of_step": statistics.median(sample_times) / statistics.median(ours),
        "versions": package_versions(),
    }
    write_json(out_dir / "throughput.json", result)
    for scratch in ("scratch-log.csv", "scratch-checkpoint.pt"):
        (out_dir / scratch).unlink(missing_ok=True)
    return result


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--size", default=None, help="model size (default: the grid's first)")
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args(argv)
    config = cfg.load(*args.config)
    result = run(config, args.size or config["grid"]["sizes"][0], args.steps,
                 Path(config["results_dir"]) / "benchmarks")
    print({k: v for k, v in result.items() if k != "versions"})


if __name__ == "__main__":
    main()
