"""Train one stage of one strategy: the entry point the workflow calls for every run.

    python -m models.train --config config/config.yaml --size tiny --strategy uniform \\
        --seed 0 --stage final --out runs/tiny/uniform/seed0/final [--upstream proxy=DIR]

``--size`` is the run's own size: a proxy's, which may differ from the final size it feeds.

Resumes from the newest good checkpoint in ``OUT/checkpoints/`` (models/checkpoint.py), and
holds ``OUT/.lock`` while it runs: a second trainer on the same folder exits at once. On success writes ``OUT/model/`` (model and
tokenizer via ``save_pretrained``; not for a swarm run unless its stage entry says
``save_model: true``), ``OUT/log.csv``, ``OUT/val.csv`` (held-out loss per domain,
models/heldout.py), TensorBoard events, ``OUT/weights.json`` and, last, ``OUT/run.json`` (the marker the workflow waits for, with provenance). Under ``torchrun``
it trains with DDP (gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from corpus.budget import planned_tokens, repetition_warning
from corpus.sampler import DomainSampler
from corpus.tokens import TokenStore
from mixbench import config as cfg
from mixbench.cli import add_run_arguments, main_guard
from mixbench.errors import ConfigError
from mixbench.io import atomic_dir, remove_stale_temporaries, write_json
from mixbench.provenance import provenance
from mixbench.runlock import RunLock
from models.checkpoint import CHECKPOINTS, remove_checkpoints
from models.device import (configure, device_memory, device_name, init_distributed, peak_memory, uses_bf16,
                           uses_compile)
from models.heldout import heldout_set
from models.gpt2 import build_model, count_parameters, gpt2_config, pad_vocabulary, unpadded_copy
from models.memory import GIB, HEADROOM, describe, largest_fitting_micro_batch, training_memory
from models.sizes import SIZES
from models.throughput import peak_tflops
from models.loop import LoopSettings, TrainingLoop
from models.signals import parameter_copies
from models.signals.base import SignalSources
from models.upstream import read_upstream, strategy_context
from strategies import get_strategy_class
from strategies.base import Strategy, validate_weights


def train(config: dict, size: str, strategy_name: str, seed: int, stage: str, out: Path,
          upstream: dict[str, Path], stop_after: int | None = None) -> bool:
    # The micro-batch of this run's own size or stage (a proxy's may differ from its final model's).
    micro_batch = cfg.run_resources(config, strategy_name, stage, size).micro_batch_size
    training = {**config["training"], "micro_batch_size": micro_batch}
    cls = get_strategy_class(cfg.strategy_class_name(config, strategy_name))
    # --size is this run's own size; a stage of fixed size refuses any other.
    chain = cfg.run_chain(config, strategy_name, stage, size)
    stage_spec = chain[stage]
    rank, world, device = init_distributed(training["device"])
    if training["batch_size"] % (world * training["micro_batch_size"]):
        raise ConfigError(f"batch_size {training['batch_size']} does not split into {world} ranks x micro-batches "
                          f"of {training['micro_batch_size']} (size {size!r})")
    configure(device, training["threads"])
    bf16 = uses_bf16(device, training["precision"])
    data_dir = Path(config["data_dir"])
    domains = config["corpus"]["domains"]
    store = TokenStore(data_dir / "tokens", "train", domains)
    context = strategy_context(config, strategy_name, stage, seed, stage_spec["steps"], upstream)
    strategy = cls(context, **cfg.strategy_hparams(config, strategy_name))
    if rank == 0:
        warn_data_budget(strategy, strategy_name, f"{strategy_name} {stage} (size {stage_spec['size']}, seed {seed})",
                         planned_tokens(stage_spec["steps"], training["batch_size"], training["seq_len"]),
                         store.token_counts())

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    torch.manual_seed(seed)  # same initial model for every strategy at a given seed
    model_config = gpt2_config(stage_spec["size"], store.vocab_size, training["dropout"],
                               tokenizer.eos_token_id, tokenizer.eos_token_id)
    if training["seq_len"] > model_config.n_positions:
        raise ConfigError(f"training.seq_len {training['seq_len']} exceeds size {stage_spec['size']!r}'s "
                          f"context of {model_config.n_positions}")
    model = pad_vocabulary(build_model(model_config)).to(device)
    n_params = count_parameters(model)
    memory = memory_estimate(stage_spec["size"], model.config.vocab_size, training, strategy, bf16=bf16, world=world,
                             device=device, rank=rank)
    if uses_compile(device, training["compile"]):
        model = torch.compile(model)
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)

    settings = LoopSettings.from_config(
        training, stage_spec["steps"], device=device, rank=rank, world_size=world, bf16=bf16,
        peak_tflops=peak_tflops(device_name(device), training["peak_tflops"]),
    )
    out.mkdir(parents=True, exist_ok=True)
    sampler = DomainSampler(store, training["seq_len"], seed)
    heldout = heldout_set(data_dir, domains, training)
    fingerprint = run_fingerprint(config, strategy_name, seed, stage, size)
    loop = TrainingLoop(model, strategy, sampler, settings, log_path=out / "log.csv",
                        checkpoint_dir=out / CHECKPOINTS, strategy_name=strategy_name, fingerprint=fingerprint,
                        sources=SignalSources(data_dir=data_dir, seed=seed, upstream=upstream, run_dir=out),
                        heldout=heldout)
    wall_start = time.time()
    finished = loop.run(stop_after=stop_after)
    if finished and rank == 0:
        save_outputs(loop, tokenizer, config, strategy_name, seed, stage, stage_spec, out, n_params,
                     time.time() - wall_start, memory)
    if world > 1:
        dist.barrier()  # rank 0 has written the outputs
    return finished


def run_fingerprint(config: dict, strategy_name: str, seed: int, stage: str, size: str) -> str:
    """What one run's result depends on, as its checkpoints and run.json record it: a checkpoint or
    a finished run of another fingerprint is not this run's. Not the number of processes (every
    step's data is the same for any number: corpus/sampler.py), nor a swarm's pack."""
    chain = cfg.run_chain(config, strategy_name, stage, size)
    return cfg.fingerprint([cfg.run_fingerprint(config, strategy_name, chain), seed, stage])


def warn_data_budget(strategy, name: str, label: str, planned: int, available: np.ndarray) -> None:
    """Before the first step, on stderr (the workflow's log of the run): the domains this run
    would train on for more than one epoch at its first weights (corpus/budget.py). A warning:
    the run goes on. A strategy that overrides ``update`` may move its weights, so for it the
    numbers are an estimate."""
    moving = type(strategy).update is not Strategy.update
    message = repetition_warning(label, list(strategy.context.domains),
                                 validate_weights(strategy.initial_weights(), len(available), name, 0),
                                 planned, available, moving=moving)
    if message:
        print(message, file=sys.stderr, flush=True)


def memory_estimate(size: str, vocab_size: int, training: dict, strategy, *, bf16: bool, world: int,
                    device: torch.device, rank: int) -> float:
    """Estimated peak bytes of this run (models/memory.py), said in the log and, on a GPU where it
    would not fit, with the micro-batch that would."""
    local_batch = training["batch_size"] // world
    keeps_graphs = strategy.reweights_current_step() and training["reweighted_step"] == "one_forward"
    shape = dict(vocab_size=vocab_size, seq_len=training["seq_len"], bf16=bf16, world_size=world,
                 cuda=device.type == "cuda",
                 signal_copies=parameter_copies(strategy.required_signals(), len(strategy.context.domains)),
                 kept_rows=local_batch if keeps_graphs else None)
    parts = training_memory(SIZES[size], micro_batch=training["micro_batch_size"], **shape)
    available = device_memory(device)
    if rank == 0:
        print(f"memory estimate at micro-batch {training['micro_batch_size']}: {describe(parts)}", file=sys.stderr)
        if available is not None and parts["total"] > HEADROOM * available:
            fits = largest_fitting_micro_batch(SIZES[size], device_bytes=available, local_batch=local_batch, **shape)
            advice = (f"set the micro-batch of {size!r} to {fits} (training.micro_batch_size, or the stage "
                      f"entry's micro_batch_size)" if fits else
                      "no micro-batch fits: use more processes" + (" or reweighted_step: two_forwards" if keeps_graphs else ""))
            print(f"warning: the estimate is more than {HEADROOM:.0%} of this device's {available / GIB:.0f} GiB; "
                  f"{advice}", file=sys.stderr)
    return parts["total"]


def close_distributed() -> None:
    """Tear DDP down in order. Its reducer holds the process group: freed after
    ``destroy_process_group`` (when ``train``'s frame goes), the group's destructor can wait
    forever for a rank that has already exited. So the model goes first, while every rank is
    still up, then the group."""
    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def save_outputs(loop: TrainingLoop, tokenizer, config, strategy_name, seed, stage, stage_spec, out: Path,
                 n_params: int, wall_seconds: float, memory_estimate: float) -> None:
    if cfg.stage_saves_model(config, strategy_name, stage):  # not a swarm run's, unless its entry asks
        with atomic_dir(out / "model") as tmp:
            unpadded_copy(loop.raw_model).save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
    domains = list(loop.domains)
    write_json(out / "weights.json", {
        "domains": domains,
        "initial_weights": loop.initial_weights,
        "final_weights": loop.strategy.final_weights(),
    })
    tokens = loop.tokens_seen
    passes = {kind: n * loop.s.world_size for kind, n in loop.passes.token_passes.items()}  # ranks do equal work
    write_json(out / "run.json", {
        "strategy": strategy_name, "stage": stage, "size": stage_spec["size"], "steps": stage_spec["steps"],
        "fingerprint": loop.fingerprint,  # what a pack compares to skip a finished run (models/train_pack.py)
        "parameters": n_params, "tokens": tokens,
        # 6·N·D: forward and backward of every parameter for every training token.
        "train_flops": 6 * n_params * tokens,
        # Everything the stage computed, strategy overheads included (reference-model forwards,
        # per-domain gradients, gradient probes): 2N per forward token, 4N per backward token,
        # and what each signal provider registered for the passes it adds.
        "token_passes": passes,
        "flops": loop.passes.flops(passes),
        "train_seconds": round(loop.elapsed, 2), "wall_seconds": round(wall_seconds, 2),
        # The held-out measurements' own time (val.csv), not part of train_seconds.
        "heldout_seconds": round(loop.heldout_seconds, 2),
        **throughput_summary(loop, memory_estimate),
        **provenance(cfg.config_hash(config), seed),
    })
    remove_checkpoints(out / CHECKPOINTS)  # finished: the outputs above supersede them


def throughput_summary(loop: TrainingLoop, memory_estimate: float) -> dict:
    """The run's speed over every step (resumed ones included) and its memory, for run.json."""
    device = loop.s.device
    tokens_per_second = loop.tokens_seen / loop.elapsed if loop.elapsed > 0 else 0.0
    utilisation = loop.mfu(tokens_per_second)
    return {
        "device": device_name(device), "processes": loop.s.world_size, "micro_batch_size": loop.s.micro_batch_size,
        "tokens_per_second": round(tokens_per_second, 1),
        "mfu": None if utilisation is None else round(utilisation, 4), "peak_tflops": loop.s.peak_tflops,
        "peak_memory_gib": round(peak_memory(device) / GIB, 3), "memory_estimate_gib": round(memory_estimate / GIB, 3),
    }


@contextlib.contextmanager
def own_run_folder(out: Path):
    """The first process (torchrun's RANK 0) holds the run folder's lock for the whole run and
    clears what writes cut short by a crash left there; a second trainer exits at once."""
    if int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    with RunLock(out):
        # The folders the trainer writes (not eval/: the evaluation job owns it).
        for folder in (out, out / CHECKPOINTS, out / "probes"):
            for path in remove_stale_temporaries(folder, recursive=False):
                print(f"removed {path}, left by a write that a crash cut short", file=sys.stderr)
        yield


@main_guard
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, size_help="the run's own size", upstream_help="finished earlier stages")
    parser.add_argument("--stage", default="final")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--stop-after", type=int, default=None,
                        help="checkpoint and stop after this many steps (resume by running again)")
    args = parser.parse_args(argv)
    config = cfg.load(*args.config)
    with own_run_folder(args.out):
        finished = train(config, args.size, args.strategy, args.seed, args.stage, args.out,
                         read_upstream(args.upstream), args.stop_after)
        close_distributed()
    if not finished:
        print(f"stopped at a checkpoint in {args.out}; run the same command again to resume", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
