"""Train a pack of a fan-out stage's runs (RegMix's swarm) one after another in one process: the
job the workflow runs for each ``pack`` of consecutive runs of a swarm whose stage entry sets
``pack`` > 1 (rules/train.smk).

    python -m models.train_pack --config config/config.yaml --size micro --strategy regmix \\
        --seed 0 --stages swarm-0 swarm-1 swarm-2 --manifest runs/micro/regmix/seed0/packs/swarm-0-2.json \\
        [--upstream STAGE=DIR ...]

Imports, the config, the tokenizer and token files, and on a GPU the CUDA context and
``torch.compile``'s code are paid once per job instead of once per run. Each run is trained by
models/train.py's ``train`` into its own folder, exactly as a job of its own would train it: it
holds its folder's lock, seeds torch's generators itself, builds its own sampler, model,
optimizer and logs, and closes them before the next run, so the outputs are the same bit for bit
(tests/test_regmix_workflow.py). A run whose run.json records this config's fingerprint of the
run and the inputs it would read now (models/run_inputs.py: the token files, the tokenizer, the
runs before it) is finished and is skipped: a pack stopped or killed part-way resumes with its first
unfinished run (from its newest checkpoint) and never retrains a finished one. A run stopped at
a checkpoint (SIGTERM, ``--stop-after``) stops the pack, exit status 3, like models/train.py.

The manifest, written last, is the marker the workflow waits for: the runs of the pack, which of
them this job trained and which it found finished, and the job's seconds. Every run's output
goes to its own RUN/train.log (mixbench/training_log.py), the pack's lines to the job's log.
run.json's ``peak_memory_gib`` is per run on a GPU; on a CPU it is the process's largest RSS so
far (the kernel keeps no other).
"""

from __future__ import annotations

import argparse
import gc
import os
import signal
import sys
import time
from pathlib import Path

from mixbench import config as cfg
from mixbench.cli import add_run_arguments, main_guard
from mixbench.errors import ConfigError
from mixbench.io import write_json
from mixbench.lineage import TRAINING_LOG
from mixbench.training_log import redirected, training_log
from mixbench.lineage import differences
from strategies import grid_config
from strategies import runs as strategy_runs
from models.run_inputs import run_inputs
from models.run_record import RunRecord
from models.upstream import read_upstream

STARTED = time.time()  # before the imports below: what a run alone would pay again

import torch  # noqa: E402 (after STARTED on purpose)

from models.loop_sync import StopRequested  # noqa: E402
from models.run_factory import run_fingerprint  # noqa: E402
from models.train import close_distributed, own_run_folder, train  # noqa: E402


def check_pack(config: dict, strategy_name: str, stages: list[str]) -> None:
    """``stages`` must be one pack of the config: consecutive runs of one fan-out stage."""
    if not stages or cfg.Stage.parse(stages[0]).replica is None:
        raise ConfigError(f"--stages must name runs of a fan-out stage (swarm-0 swarm-1 ...), got {stages}")
    expected = list(strategy_runs.pack_of(config, strategy_name, stages[0]))
    if stages != expected:
        raise ConfigError(f"--stages {' '.join(stages)} is not a pack of {strategy_name!r} with pack "
                          f"{cfg.stage_pack(config, strategy_name, stages[0])}: expected {' '.join(expected)}")


def finished(out: Path, fingerprint: str, *, inputs: dict, needs_model: bool) -> bool:
    """Whether ``out`` holds this run finished, and why not in the log where it holds one that is
    not: its run.json must record ``fingerprint`` and ``inputs`` (an older run.json without them is
    trained again; one made from other token files, another tokenizer or other runs before it too,
    whatever the files' modification times), and, where the stage saves models, have its model folder."""
    path = out / "run.json"
    if not path.exists():
        return False
    record = RunRecord.read(path)
    changed = differences(record.inputs or {}, inputs)
    if record.fingerprint != fingerprint:
        why = "records no fingerprint (an older run)" if record.fingerprint is None else "records another configuration"
    elif record.inputs is None:
        why = "records no inputs (an older run)"
    elif changed:
        why = f"was made from other inputs ({'; '.join(changed)})"
    elif needs_model and not (out / "model").is_dir():
        why = "has no model folder, and the stage's save_model asks for one"
    elif not training_log(out).is_file():
        why = f"has no training log ({TRAINING_LOG}): the run is incomplete"
    else:
        return True
    print(f"{path} {why}: trained again", file=sys.stderr, flush=True)
    return False


def between_runs() -> None:
    """Free what the last run left (its model, optimizer and batches), and let SIGINT and SIGTERM
    end the process again: the loop's handlers, which checkpoint and stop a run, stay installed
    after it and would swallow a signal that comes before the next run's loop starts."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    gc.collect()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def train_pack(config: dict, size: str, strategy_name: str, seed: int, stages: list[str],
               upstream: dict[str, Path], stop_after: int | None = None) -> dict | None:
    """Train every unfinished run of the pack in turn; the manifest record when all are finished,
    None when a run stopped at a checkpoint (the pack stops with it)."""
    check_pack(config, strategy_name, stages)
    trained, skipped, seconds = [], [], {}
    first_run_started = None
    for stage in stages:
        out = Path(cfg.run_dir(config, size, strategy_name, seed, stage))
        run = cfg.Run(strategy=strategy_name, stage=stage, size=size, seed=seed)
        fingerprint = run_fingerprint(config, run)
        if finished(out, fingerprint, inputs=run_inputs(config, fingerprint, upstream),
                    needs_model=cfg.stage_saves_model(config, strategy_name, stage)):
            print(f"=== {stage}: finished in {out}, skipped", file=sys.stderr, flush=True)
            skipped.append(stage)
            continue
        print(f"=== {stage}: training into {out} (its log: {training_log(out)})", file=sys.stderr, flush=True)
        started = time.time()
        first_run_started = first_run_started or started
        StopRequested.received = False
        with redirected(out), own_run_folder(out):
            done = train(config, size, strategy_name, seed, stage, out, upstream, stop_after)
        between_runs()
        if not done:
            return None
        if StopRequested.received:  # after the run's last step (its held-out loss, its outputs): it is finished
            print(f"=== stop requested while {stage} finished; the pack stops here", file=sys.stderr, flush=True)
            return None
        trained.append(stage)
        seconds[stage] = round(time.time() - started, 2)
    return {"strategy": strategy_name, "size": size, "seed": seed, "runs": stages, "trained": trained,
            "skipped": skipped, "run_seconds": seconds,
            # Imports and set-up before the first run: what each run of a pack of one pays again.
            "startup_seconds": round((first_run_started or time.time()) - STARTED, 2),
            "wall_seconds": round(time.time() - STARTED, 2)}


@main_guard
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, size_help="the runs' own size", upstream_help="the runs every run reads")
    parser.add_argument("--stages", nargs="+", required=True, help="the pack's runs, in order")
    parser.add_argument("--manifest", type=Path, required=True, help="written last, when every run is finished")
    parser.add_argument("--stop-after", type=int, default=None,
                        help="checkpoint and stop the run being trained after this many steps (resume by running again)")
    args = parser.parse_args(argv)
    config = grid_config.load(*args.config)
    record = train_pack(config, args.size, args.strategy, args.seed, args.stages, read_upstream(args.upstream),
                        args.stop_after)
    close_distributed()
    if record is None:
        print("a run stopped at a checkpoint; run the same command again to resume the pack", file=sys.stderr)
        sys.exit(3)
    if int(os.environ.get("RANK", "0")) == 0:
        write_json(args.manifest, record)
    print(f"pack of {len(args.stages)} runs: trained {len(record['trained'])}, found {len(record['skipped'])} "
          f"finished, in {record['wall_seconds']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
