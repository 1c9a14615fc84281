"""Train one stage of one strategy: the entry point the workflow calls for every run.

    python -m models.train --config config/config.yaml --size tiny --strategy uniform \\
        --seed 0 --stage final --out runs/tiny/uniform/seed0/final [--upstream proxy=DIR]

``--size`` is the run's own size: a proxy's, which may differ from the final size it feeds.
models/run_factory.py builds the run; run.json's fields are models/run_record.py's.

Resumes from the newest good checkpoint in ``OUT/checkpoints/`` (models/checkpoint.py), and
holds ``OUT/.lock`` while it runs: a second trainer on the same folder exits at once. On success
writes ``OUT/model/`` (model and tokenizer via ``save_pretrained``; not for a swarm run unless
its stage entry says ``save_model: true``), ``OUT/log.csv``, ``OUT/val.csv`` (held-out loss per
domain, models/heldout.py), TensorBoard events, ``OUT/weights.json`` and, last, ``OUT/run.json``
(the marker the workflow waits for, with provenance). Under ``torchrun`` it trains with DDP
(gloo on CPU, NCCL on GPU).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import os
import sys
import time
from pathlib import Path

import torch.distributed as dist

from corpus import identity as data_identity
from mixbench import config as cfg
from mixbench.cli import add_run_arguments, main_guard
from mixbench.io import atomic_dir, remove_stale_temporaries, write_json
from mixbench.provenance import provenance
from mixbench import training_log
from mixbench.runlock import RunLock
from strategies import grid_config
from models.checkpoint import CHECKPOINTS, remove_checkpoints
from models.device import device_name, peak_memory
from models.gpt2 import unpadded_copy
from models.memory import GIB
from models.run_factory import TrainingRun, build_run
from models.run_record import RunRecord, Throughput
from models.upstream import read_upstream


def train(config: dict, size: str, strategy_name: str, seed: int, stage: str, out: Path,
          upstream: dict[str, Path], stop_after: int | None = None) -> bool:
    """Train one run (models/run_factory.py builds it) into ``out``; False when it stopped at a
    checkpoint, True when it finished and wrote its outputs."""
    # Token files another grid's corpus or tokenizer settings made are never trained on.
    data_identity.check(Path(config["data_dir"]) / "tokens", config, "tokens")
    run = build_run(config, cfg.Run(strategy=strategy_name, stage=stage, size=size, seed=seed),
                    out=out, upstream=upstream)
    wall_start = time.time()
    finished = run.loop.run(stop_after=stop_after)
    if finished and run.placement.rank == 0:
        save_outputs(run, config, out, time.time() - wall_start)
    if run.placement.world_size > 1:
        dist.barrier()  # rank 0 has written the outputs
    return finished


def close_distributed() -> None:
    """Tear DDP down in order. Its reducer holds the process group: freed after
    ``destroy_process_group`` (when ``train``'s frame goes), the group's destructor can wait
    forever for a rank that has already exited. So the model goes first, while every rank is
    still up, then the group."""
    if dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


def save_outputs(run: TrainingRun, config: dict, out: Path, wall_seconds: float) -> None:
    """The finished run's model (where its stage saves one), weights.json and, last, run.json."""
    loop, identity = run.loop, run.identity
    if cfg.stage_saves_model(config, identity.strategy, identity.stage):  # not a swarm run's, unless its entry asks
        with atomic_dir(out / "model") as tmp:
            unpadded_copy(loop.raw_model).save_pretrained(tmp)
            run.tokenizer.save_pretrained(tmp)
    write_json(out / "weights.json", {
        "domains": list(loop.domains),
        "initial_weights": loop.initial_weights,
        "final_weights": loop.strategy.final_weights(),
    })
    run_record(run, config, wall_seconds).write(out / "run.json")
    remove_checkpoints(out / CHECKPOINTS)  # finished: the outputs above supersede them


def run_record(run: TrainingRun, config: dict, wall_seconds: float) -> RunRecord:
    """What run.json records of a finished training run (models/run_record.py)."""
    loop, state = run.loop, run.loop.state
    n_params, tokens = loop.num_parameters, state.tokens_seen
    passes = {kind: n * loop.settings.world_size for kind, n in loop.passes.token_passes.items()}  # ranks do equal work
    return RunRecord(
        strategy=run.identity.strategy, stage=str(run.identity.stage), size=run.identity.size, steps=run.steps,
        fingerprint=run.fingerprint, parameters=n_params, tokens=tokens, train_flops=6 * n_params * tokens,
        inputs=run.inputs,  # the same dict as its checkpoints' (models/run_inputs.py)
        allow_static=grid_config.static_allowed(config, run.identity.strategy, str(run.identity.stage)),
        token_passes=passes, flops=loop.passes.flops(passes), train_seconds=round(state.elapsed, 2),
        wall_seconds=round(wall_seconds, 2), heldout_seconds=round(state.heldout_seconds, 2),
        throughput=throughput_summary(run), **provenance(cfg.config_hash(config), run.identity.seed))


def throughput_summary(run: TrainingRun) -> Throughput:
    """The run's speed over every step (resumed ones included) and its memory."""
    loop, state, device = run.loop, run.loop.state, run.placement.device
    tokens_per_second = state.tokens_seen / state.elapsed if state.elapsed > 0 else 0.0
    utilisation = loop.mfu(tokens_per_second)
    return Throughput(
        device=device_name(device), processes=loop.settings.world_size, micro_batch_size=loop.settings.micro_batch_size,
        tokens_per_second=round(tokens_per_second, 1),
        mfu=None if utilisation is None else round(utilisation, 4), peak_tflops=loop.settings.peak_tflops,
        peak_memory_gib=round(peak_memory(device) / GIB, 3), memory_estimate_gib=round(run.memory_estimate / GIB, 3))


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
            for path in remove_stale_temporaries(folder, recursive=False, locked=True):
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
    config = grid_config.load(*args.config)
    with training_log.kept(args.out), own_run_folder(args.out):
        finished = train(config, args.size, args.strategy, args.seed, args.stage, args.out,
                         read_upstream(args.upstream), args.stop_after)
        close_distributed()
    if not finished:
        print(f"stopped at a checkpoint in {args.out}; run the same command again to resume", file=sys.stderr)
        sys.exit(3)


if __name__ == "__main__":
    main()
