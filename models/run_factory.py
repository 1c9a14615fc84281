"""One training run built from a config and the run's identity: models/train.py trains what
``build_run`` builds, benchmarks/throughput.py times it.

A run is its strategy (with the context of the runs before it, models/upstream.py), its model as
every run builds it (vocabulary padded to a multiple of 64, the run's micro-batch, bf16 autocast
and ``torch.compile`` per ``training.precision`` / ``training.compile``, DDP under torchrun) and
the training loop around them (optimizer, sampler, held-out set, logs and checkpoints,
models/loop.py). Before the model is built the first process warns of training data the run
would repeat (corpus/budget.py) and gives the run's memory estimate (models/memory.py).
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import AutoTokenizer

from corpus.budget import repetition_warning
from corpus.sampler import DomainSampler
from corpus.tokens import TokenStore
from mixbench import config as cfg
from mixbench.errors import ConfigError
from models.checkpoint import CHECKPOINTS
from models.device import (configure, device_memory, device_name, init_distributed, uses_bf16, uses_compile)
from models.gpt2 import build_model, gpt2_config, pad_vocabulary
from models.heldout import heldout_set
from models.loop import TrainingLoop
from models.memory import GIB, HEADROOM, describe, largest_fitting_micro_batch, training_memory
from models.optim import LoopSettings
from models.run_inputs import run_fingerprint, run_inputs  # noqa: F401 (run_fingerprint: a pack's import)
from models.signals import parameter_copies
from models.signals.base import SignalSources
from mixbench.model_sizes import SIZES
from models.throughput import peak_tflops
from models.upstream import strategy_context
from strategies import get_strategy_class
from strategies import runs as strategy_runs
from strategies.base import Strategy, validate_weights


@dataclass(frozen=True, kw_only=True)
class Placement:
    """Where and how this process computes: decided once per process (``here``)."""
    rank: int
    world_size: int
    device: torch.device
    bf16: bool
    compiled: bool
    peak_tflops: float | None  # per device, for MFU; None where unknown (a CPU)

    @classmethod
    def here(cls, training: dict) -> "Placement":
        """This process's place: joins the process group under torchrun, sets the CPU threads or TF32."""
        rank, world, device = init_distributed(training["device"])
        configure(device, training["threads"])
        return cls(rank=rank, world_size=world, device=device, bf16=uses_bf16(device, training["precision"]),
                   compiled=uses_compile(device, training["compile"]),
                   peak_tflops=peak_tflops(device_name(device), training["peak_tflops"]))

    def settings(self, training: dict, steps: int) -> LoopSettings:
        return LoopSettings.from_config(training, steps, device=self.device, rank=self.rank,
                                        world_size=self.world_size, bf16=self.bf16, peak_tflops=self.peak_tflops)


@dataclass(frozen=True)
class RunOptions:
    """What a benchmark changes in a run of the grid; the defaults build the run the grid trains."""
    micro_batch_size: int | None = None  # None: the run's own (its stage entry's, else its size's)
    vocab_size: int | None = None  # None: the token files'; a larger one costs what a larger tokenizer's would
    # The stage's work at ``identity.size`` even where the grid runs that stage at another size
    # (a benchmark compares every strategy at one size). Such a run is none of the grid's: it
    # has no fingerprint, so it resumes no checkpoint of one.
    any_size: bool = False


@dataclass(kw_only=True)
class TrainingRun:
    """A built run, ready to ``loop.run()``."""
    identity: cfg.Run
    steps: int
    training: dict  # the config's training section with the run's micro-batch
    placement: Placement
    fingerprint: str  # run_fingerprint's: what its checkpoints and run.json record
    inputs: dict  # run_inputs': the digests of what it is made from, in run.json and its checkpoints
    tokenizer: object  # saved beside the model
    loop: TrainingLoop
    memory_estimate: float  # bytes at the peak (models/memory.py)


def run_training(config: dict, run: cfg.Run, options: RunOptions = RunOptions()) -> dict:
    """The config's training section with the run's micro-batch (a proxy's may differ from its final model's)."""
    micro = options.micro_batch_size or cfg.run_resources(config, run.strategy, run.stage, run.size).micro_batch_size
    return {**config["training"], "micro_batch_size": micro}


def build_run(config: dict, run: cfg.Run, *, out: Path, upstream: dict[str, Path],
              placement: Placement | None = None, options: RunOptions = RunOptions()) -> TrainingRun:
    """The run ``run`` of ``config``, writing into ``out`` and reading the finished runs ``upstream``
    ({stage: folder}); resumed from its newest good checkpoint in ``out``."""
    training = run_training(config, run, options)
    if options.any_size:
        steps, fingerprint = cfg.stage_training(config, run.strategy, run.stage, run.size)["steps"], ""
    else:  # refuses a stage of fixed size at any other size
        steps = strategy_runs.run_chain(config, run.strategy, str(run.stage), run.size)[str(run.stage)]["steps"]
        fingerprint = run_fingerprint(config, run)
    placement = placement or Placement.here(training)
    if training["batch_size"] % (placement.world_size * training["micro_batch_size"]):
        raise ConfigError(f"batch_size {training['batch_size']} does not split into {placement.world_size} ranks x "
                          f"micro-batches of {training['micro_batch_size']} (size {run.size!r})")
    data_dir, domains = Path(config["data_dir"]), config["corpus"]["domains"]
    store = TokenStore(data_dir / "tokens", "train", domains)
    inputs = run_inputs(config, fingerprint, upstream)
    strategy = build_strategy(config, run, steps, upstream, vocab_size=options.vocab_size)
    if placement.rank == 0:
        # The budget and the counts the strategy was given (models/upstream.py: strategy_context).
        warn_data_budget(strategy, run.strategy, run.label(), strategy.context.planned_tokens,
                         strategy.context.available_tokens)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    torch.manual_seed(run.seed)  # same initial model for every strategy at a given seed
    model = new_model(run.size, options.vocab_size or store.vocab_size, training, placement.device,
                      eos_id=tokenizer.eos_token_id)
    memory = memory_estimate(run.size, model.config.vocab_size, training, strategy, placement)
    out.mkdir(parents=True, exist_ok=True)
    loop = TrainingLoop(model=placed(model, placement), strategy=strategy,
                        sampler=DomainSampler(store, training["seq_len"], run.seed),
                        settings=placement.settings(training, steps), log_path=out / "log.csv",
                        checkpoint_dir=out / CHECKPOINTS, strategy_name=run.strategy, fingerprint=fingerprint,
                        inputs=inputs,
                        sources=SignalSources(data_dir=data_dir, seed=run.seed, upstream=upstream, run_dir=out),
                        heldout=heldout_set(data_dir, domains, training))
    return TrainingRun(identity=run, steps=steps, training=training, placement=placement, fingerprint=fingerprint,
                       inputs=inputs, tokenizer=tokenizer, loop=loop, memory_estimate=memory)


def build_strategy(config: dict, run: cfg.Run, steps: int, upstream: dict[str, Path], *,
                   vocab_size: int | None = None) -> Strategy:
    """The run's strategy, with the weights of the runs before it; ``vocab_size`` the models' own
    where it is not the token files' (a benchmark's larger vocabulary)."""
    cls = get_strategy_class(cfg.strategy_class_name(config, run.strategy))
    context = strategy_context(config, run, steps, upstream, heldout=cls.reads_upstream_heldout)
    if vocab_size is not None:
        context = dataclasses.replace(context, vocab_size=vocab_size)
    return cls(context, **cfg.strategy_hparams(config, run.strategy))


def new_model(size: str, vocab_size: int, training: dict, device: torch.device, *, eos_id: int = 0):
    """A random GPT-2 of ``size`` on ``device``, its vocabulary padded to a multiple of 64 (seed
    torch first: the same seed gives the same model)."""
    model_config = gpt2_config(size, vocab_size, training["dropout"], eos_id, eos_id)
    if training["seq_len"] > model_config.n_positions:
        raise ConfigError(f"training.seq_len {training['seq_len']} exceeds size {size!r}'s "
                          f"context of {model_config.n_positions}")
    return pad_vocabulary(build_model(model_config)).to(device)


def placed(model, placement: Placement):
    """``model`` compiled where training.compile says so, and wrapped in DDP under torchrun."""
    if placement.compiled:
        model = torch.compile(model)
    if placement.world_size > 1:
        cuda = placement.device.type == "cuda"
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[placement.device.index] if cuda else None)
    return model


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


def memory_estimate(size: str, vocab_size: int, training: dict, strategy, placement: Placement) -> float:
    """Estimated peak bytes of this run (models/memory.py), said in the log and, on a GPU where it
    would not fit, with the micro-batch that would."""
    local_batch = training["batch_size"] // placement.world_size
    keeps_graphs = strategy.reweights_current_step() and training["reweighted_step"] == "one_forward"
    shape = dict(vocab_size=vocab_size, seq_len=training["seq_len"], bf16=placement.bf16,
                 world_size=placement.world_size, cuda=placement.device.type == "cuda",
                 signal_copies=parameter_copies(strategy.required_signals(), len(strategy.context.domains)),
                 kept_rows=local_batch if keeps_graphs else None)
    parts = training_memory(SIZES[size], micro_batch=training["micro_batch_size"], **shape)
    available = device_memory(placement.device)
    if placement.rank == 0:
        print(f"memory estimate at micro-batch {training['micro_batch_size']}: {describe(parts)}", file=sys.stderr)
        if available is not None and parts["total"] > HEADROOM * available:
            fits = largest_fitting_micro_batch(SIZES[size], device_bytes=available, local_batch=local_batch, **shape)
            advice = (f"set the micro-batch of {size!r} to {fits} (training.micro_batch_size, or the stage "
                      f"entry's micro_batch_size)" if fits else "no micro-batch fits: use more processes"
                      + (" or reweighted_step: two_forwards" if keeps_graphs else ""))
            print(f"warning: the estimate is more than {HEADROOM:.0%} of this device's {available / GIB:.0f} GiB; "
                  f"{advice}", file=sys.stderr)
    return parts["total"]
