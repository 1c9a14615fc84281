"""Each strategy's step time, tokens/s, MFU and peak memory against uniform, and the loop's overhead.

    python -m benchmarks.throughput --config config/config.yaml [--strategies uniform doremi doge]
        [--size small] [--steps 5] [--batch-size 12 --seq-len 64] [--compile auto|true|false] [--vocab-size N]

Needs the token files of the config (run the workflow's data steps first). Each strategy runs
the stage where it does its work (DoReMi's and DoGE's proxy, the final run otherwise), at the
same model size and batch shape; earlier stages (a reference model) are stand-ins, random models
of the same size, which cost the same to run. Every loop is a run as models/run_factory.py
builds one for models/train.py: vocabulary padded to a multiple of 64, the size's micro-batch,
bf16 autocast and ``torch.compile`` per ``training.precision`` / ``training.compile`` (by
default both on CUDA only). ``--vocab-size`` gives the models a larger vocabulary than the tokenizer's: the ids still
come from the token files, and a step costs the same whichever ids occur.

The reference is ``minimal_step``, the same computation written out by hand, on a model built
the same way, with the same fused AdamW, micro-batches, autocast and clipping, and nothing else.

Time: the minimal step and every strategy's loop live in one process and their steps are
interleaved round by round (each round starting one later in the order), so that machine noise
hits all alike; CUDA is synchronised before each timer starts and before it stops; ``step_s`` is
a median over ``--steps`` rounds. Periodic
signals (DoGraph's probes) are amortised explicitly: the steps of the configured run are grouped
by the signals due, a step of each group is timed in every round (``TrainingLoop.skip_to``),
and ``step_s`` is the mean over the run weighted by each group's share of its steps.

Memory: each strategy's peak above what the process held before its loop was built, over a step
of each group after a warm-up one (compilation, the optimizer's lazy state), before the next
loop exists: CUDA's max allocated, or on a CPU peak RSS (Linux's VmHWM). ``extra_memory_copies``
is the peak above uniform's in fp32 copies of the model's parameters.

Held-out curves: one measurement of the held-out loss (models/heldout.py) is timed in every
round like a step; ``heldout_fraction`` is the run's measurements (every ``eval_every`` steps
and after the last) times its median over the run's training time (target: at most
``HELDOUT_TARGET``).

Reported per strategy: ``step_s``, ``tokens_per_s``, ``mfu`` (against the device's peak bf16
FLOP/s from models/throughput.py or ``training.peak_tflops``; null where neither is known, as on
a CPU), ``peak_memory_bytes`` and their ratios to uniform; the uniform row adds
``loop_overhead_ratio`` (its step time over the minimal step's; target: at most
``OVERHEAD_TARGET``) and the sampler's sequences per second. Written to
``{results_dir}/benchmarks/throughput.json``; nothing asserts.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from benchmarks.peak_memory import PeakMemory
from benchmarks.throughput_report import HELDOUT_TARGET, OVERHEAD_TARGET, print_report
from corpus.sampler import DomainSampler
from corpus.tokens import TokenStore
from mixbench import config as cfg
from mixbench.cli import add_config_argument, main_guard
from mixbench.errors import ConfigError
from mixbench.io import write_json
from mixbench.provenance import package_versions
from models.device import device_name
from models.flat_params import unwrap
from models.gpt2 import build_model, count_parameters, gpt2_config, unpadded_vocab_size
from models.optim import LoopSettings, make_optimizer
from models.run_factory import Placement, RunOptions, build_run, new_model, placed
from models.run_inputs import data_inputs
from models.run_record import RunRecord
from models.runlog import HeldOutLog
from models.step import model_token_loss, to_device
from models.throughput import mfu, model_flops_per_token
from strategies import grid_config
from strategies import runs as strategy_runs


def minimal_step(model, optimizer, micro_batches: list[torch.Tensor], vocab_size: int, bf16: bool,
                 grad_clip: float) -> None:
    """The loop's computation and nothing else: per micro-batch a forward (bf16 autocast when the
    loop uses it) through the loop's loss path (the model's chunked cross-entropy over the real
    vocabulary, ``vocab_size`` of them: models/token_loss.py), the mean, a backward accumulating
    the gradient; then clipping and the optimizer step. No per-domain statistics, no host
    synchronisation. (No learning-rate schedule either: setting a float is host work of
    microseconds.)"""
    if unpadded_vocab_size(unwrap(model)) != vocab_size:
        raise ValueError(f"the model scores {unpadded_vocab_size(unwrap(model))} entries, not {vocab_size}")
    for tokens in micro_batches:
        with torch.autocast(tokens.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model_token_loss(model, tokens[:, :-1], tokens[:, 1:]).mean()
        (loss / len(micro_batches)).backward()
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def timed(fn, device: torch.device) -> float:
    """Seconds of ``fn`` with the device work it queues: CUDA runs asynchronously, so wait for
    earlier work before the clock starts and for this work before it stops."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sync()
    start = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - start


@dataclass
class Setup:
    """What every model of the benchmark shares, decided as models/run_factory.py decides it for a run."""
    training: dict  # the config's, with this size's micro-batch
    size: str
    vocab_size: int  # before padding
    placement: Placement

    @classmethod
    def of(cls, config: dict, size: str, vocab_size: int) -> "Setup":
        training = {**config["training"], "micro_batch_size": cfg.micro_batch_size(config["training"], size)}
        if training["batch_size"] % training["micro_batch_size"]:
            raise ConfigError(f"batch_size {training['batch_size']} does not split into micro-batches of "
                              f"{training['micro_batch_size']} (size {size!r})")
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            raise ConfigError("the benchmark runs in one process: start it without torchrun")
        return cls(training, size, vocab_size, Placement.here(training))

    def model(self):
        """The loops' initial model (theirs is seed 0's too), compiled where theirs is."""
        torch.manual_seed(0)
        return placed(new_model(self.size, self.vocab_size, self.training, self.placement.device), self.placement)

    def settings(self, steps: int) -> LoopSettings:
        return self.placement.settings(self.training, steps)


def stand_in_upstream(runs: tuple[str, ...], stage: str, setup: Setup, domains: list[str],
                      scratch: Path, data_dir: Path) -> dict[str, Path]:
    """Every run before ``stage`` as a finished-looking one: a random model (not for a run of a
    fan-out stage, whose model nothing reads), uniform weights, a held-out loss of log V on every
    domain at step 0 (val.csv), and a run.json whose inputs are ``data_dir``'s (models/upstream.py
    checks them)."""
    upstream, uniform = {}, [1 / len(domains)] * len(domains)
    for earlier in runs[: runs.index(stage)]:
        if cfg.Stage.parse(earlier).replica is None:
            build_model(gpt2_config(setup.size, setup.vocab_size, setup.training["dropout"])).save_pretrained(
                scratch / earlier / "model")
        (scratch / earlier).mkdir(parents=True, exist_ok=True)
        write_json(scratch / earlier / "weights.json",
                   {"domains": domains, "initial_weights": uniform, "final_weights": uniform})
        curve = HeldOutLog(scratch / earlier / "val.csv", domains, 0)
        curve.write(0, 0, 0, 0.0, 0.0, np.full(len(domains), math.log(setup.vocab_size)))
        curve.close()
        RunRecord(strategy="stand-in", stage=earlier, size=setup.size, steps=0, parameters=0, tokens=0, train_flops=0,
                  token_passes={}, train_seconds=0.0, wall_seconds=0.0, config_hash="", git_commit="", seed=0,
                  versions={}, inputs={"config": "", **data_inputs(data_dir), "upstream": {}}
                  ).write(scratch / earlier / "run.json")
        upstream[earlier] = scratch / earlier
    return upstream


def due_groups(strategy, total_steps: int) -> dict[frozenset, list[int]]:
    """The steps of a run grouped by the set of signals due at each."""
    groups: dict[frozenset, list[int]] = {}
    for step in range(1, total_steps + 1):
        due = frozenset(n for n in strategy.required_signals() if strategy.signal_due(n, step))
        groups.setdefault(due, []).append(step)
    return groups


class Subject:
    """One strategy's loop on its working stage (built by models/run_factory.py at the benchmark's
    size, micro-batch and vocabulary, seed 0), and its steps grouped by the signals due."""

    def __init__(self, config: dict, strategy_name: str, size: str, setup: Setup, scratch: Path,
                 stage: str | None = None):
        stages = strategy_runs.strategy_stages(config, strategy_name)  # a fan-out stage's runs one by one
        # Where a strategy computes its signals, unless ``stage`` names another (a swarm run: swarm-0).
        self.stage = stage or ("proxy" if "proxy" in stages else "final")
        scratch = scratch / strategy_name
        scratch.mkdir(parents=True)
        upstream = stand_in_upstream(stages, self.stage, setup, config["corpus"]["domains"],
                                     scratch, Path(config["data_dir"]))
        run = build_run(config, cfg.Run(strategy=strategy_name, stage=self.stage, size=size, seed=0),
                        out=scratch, upstream=upstream, placement=setup.placement,
                        options=RunOptions(micro_batch_size=setup.training["micro_batch_size"],
                                           vocab_size=setup.vocab_size, any_size=True))
        self.loop, self.run_steps = run.loop, run.steps
        every = self.loop.eval_every
        # Every eval_every steps, and after the last step if that is not one of them.
        self.measurements = self.run_steps // every + (self.run_steps % every > 0) if self.loop.heldout else 0
        self.groups = due_groups(self.loop.strategy, self.run_steps)
        self.lr, self.device = setup.training["lr"], setup.placement.device

    def timed_at(self, step: int) -> float:
        self.loop.skip_to(step)  # the strategy decides what is due from the step number
        return timed(lambda: self.loop.train_step(self.lr), self.device)

    def one_of_each_group(self) -> dict[frozenset, float]:
        return {due: self.timed_at(members[0]) for due, members in self.groups.items()}

    def close(self) -> None:
        for log in self.loop.logs.open():
            log.close()

    def timed_heldout(self) -> float | None:
        """One held-out measurement (models/heldout.py), as the loop makes it."""
        return timed(self.loop.measure_heldout, self.device) if self.loop.heldout else None


def measure(config: dict, names: list[str], size: str, rounds: int, vocab_size: int | None = None,
            stages: dict[str, str] | None = None) -> dict:
    """The benchmark's report (see the module's docstring); ``names`` must include uniform.
    ``stages``: {strategy: the stage to run} where not its working stage (RegMix: swarm-0)."""
    training, domains = config["training"], config["corpus"]["domains"]
    store = TokenStore(Path(config["data_dir"]) / "tokens", "train", domains)
    if vocab_size is not None and vocab_size < store.vocab_size:
        raise ConfigError(f"--vocab-size {vocab_size} is smaller than the tokenizer's {store.vocab_size}")
    setup = Setup.of(config, size, vocab_size or store.vocab_size)
    device, batch, seq_len = setup.placement.device, training["batch_size"], training["seq_len"]
    meter = PeakMemory(device)
    uniform = np.full(len(domains), 1 / len(domains))

    reference = setup.model()
    optimizer = make_optimizer(unwrap(reference), setup.settings(steps=1))
    rows = DomainSampler(store, seq_len, seed=1).step_batch(uniform, batch, step=1)
    micro = list(to_device(rows.tokens, device).split(setup.training["micro_batch_size"]))
    vocab = unpadded_vocab_size(unwrap(reference))
    minimal = lambda: timed(lambda: minimal_step(reference, optimizer, micro, vocab, setup.placement.bf16,
                                                 training["grad_clip"]), device)
    minimal()  # warm-up: compilation, the optimizer's state, and torch's lazy initialisation (before any mark)
    with tempfile.TemporaryDirectory() as scratch:
        subjects, peaks = {}, {}
        for name in names:  # each measured before the next exists: its peak is its own
            meter.mark()
            subjects[name] = Subject(config, name, size, setup, Path(scratch), (stages or {}).get(name))
            subjects[name].one_of_each_group()
            peaks[name] = meter.peak_of(subjects[name].one_of_each_group)
        meter.timing()
        samples = {name: [] for name in [None, *names, *(("heldout", n) for n in names)]}  # None: the minimal step
        turns = [(None, minimal), *((name, subject.one_of_each_group) for name, subject in subjects.items()),
                 *((("heldout", name), subject.timed_heldout) for name, subject in subjects.items())]
        for r in range(rounds):  # each round starts one later: no one always follows a probe step
            for name, step in turns[r % len(turns):] + turns[: r % len(turns)]:
                samples[name].append(step())
        for subject in subjects.values():  # their writers (TensorBoard's flushes from a thread) stop before
            subject.close()                # the scratch folder is removed under them

    raw = unwrap(reference)
    parameters = count_parameters(raw)
    flops_per_token = model_flops_per_token(parameters, raw.config.n_layer, raw.config.n_embd, seq_len)

    def speed(step_s: float) -> dict:
        tokens_per_s = batch * seq_len / step_s
        return {"step_s": step_s, "tokens_per_s": tokens_per_s,
                "mfu": mfu(tokens_per_s, flops_per_token, setup.placement.peak_tflops, devices=1)}

    strategies = {}
    for name, subject in subjects.items():
        per_group = {due: statistics.median(s[due] for s in samples[name]) for due in subject.groups}
        mean_step = sum(len(subject.groups[g]) * t for g, t in per_group.items()) / subject.run_steps
        heldout_s = statistics.median(samples["heldout", name]) if subject.measurements else 0.0
        heldout_fraction = subject.measurements * heldout_s / (subject.run_steps * mean_step)
        strategies[name] = {
            "strategy": name, "stage": subject.stage, "run_steps": subject.run_steps,
            **speed(mean_step),  # over the configured run: periodic work belongs in the cost of a step
            # The held-out curve's cost: its measurements in the run, each timed like a step.
            "heldout_measurements": subject.measurements, "heldout_s": heldout_s,
            "heldout_fraction": heldout_fraction, "heldout_target": HELDOUT_TARGET,
            "heldout_met": heldout_fraction <= HELDOUT_TARGET,
            "step_groups": [{"signals": sorted(g), "steps_in_run": len(subject.groups[g]), "median_step_s": t}
                            for g, t in per_group.items()],
            "peak_memory_bytes": peaks[name]}
    base = strategies["uniform"]
    for r in strategies.values():
        r.update(step_time_vs_uniform=r["step_s"] / base["step_s"],
                 peak_memory_vs_uniform=r["peak_memory_bytes"] / base["peak_memory_bytes"],
                 extra_memory_copies=(r["peak_memory_bytes"] - base["peak_memory_bytes"]) / (4 * parameters))
    minimal_row = speed(statistics.median(samples[None]))
    sampler = DomainSampler(store, seq_len, seed=2)
    draw = [timed(lambda: sampler.step_batch(uniform, batch, step), torch.device("cpu")) for step in range(1, 201)]
    ratio = base["step_s"] / minimal_row["step_s"]
    base.update(loop_overhead_ratio=ratio, loop_overhead_target=OVERHEAD_TARGET,
                loop_overhead_met=ratio <= OVERHEAD_TARGET, sampler_sequences_per_s=batch / statistics.median(draw))
    return {"size": size, "rounds": rounds, "device": device_name(device), "cpus": os.cpu_count(),
            "peak_tflops": setup.placement.peak_tflops, "bf16": setup.placement.bf16,
            "compiled": setup.placement.compiled,
            "batch_size": batch, "micro_batch_size": setup.training["micro_batch_size"], "seq_len": seq_len,
            "parameters": parameters, "vocab_size": vocab, "padded_vocab_size": raw.config.vocab_size,
            "flops_per_token": flops_per_token, "minimal_step": minimal_row, "strategies": strategies,
            "versions": package_versions()}


SHAPE_OPTIONS = ("batch_size", "micro_batch_size", "seq_len", "threads")


@main_guard
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--size", default=None, help="model size (default: the grid's first)")
    parser.add_argument("--steps", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument("--strategies", nargs="+", default=None, help="default: uniform plus the grid's strategies")
    for key in SHAPE_OPTIONS:
        parser.add_argument(f"--{key.replace('_', '-')}", type=int, default=None, help=f"override training.{key}")
    parser.add_argument("--compile", choices=["auto", "true", "false"], default=None, help="override training.compile")
    parser.add_argument("--vocab-size", type=int, default=None, help="the models' vocabulary (default: the tokenizer's)")
    args = parser.parse_args(argv)
    training = {key: getattr(args, key) for key in SHAPE_OPTIONS if getattr(args, key) is not None}
    if args.compile is not None:
        training["compile"] = {"auto": "auto", "true": True, "false": False}[args.compile]
    config = grid_config.load(*args.config, overrides={"training": training})
    size = args.size or config["grid"]["sizes"][0]
    names = list(dict.fromkeys(["uniform", *(args.strategies or config["grid"]["strategies"])]))
    report = measure(config, names, size, args.steps, args.vocab_size)
    write_json(Path(config["results_dir"]) / "benchmarks" / "throughput.json", {**report, "overrides": training})
    print_report(report)


if __name__ == "__main__":
    main()
