"""Run a ``fit`` stage: compute a strategy's weights from the runs before it, without training.

    python -m models.fit --config config/config.yaml --size tiny --strategy regmix --seed 0 \\
        --out runs/tiny/regmix/seed0/fit --upstream swarm-0=DIR swarm-1=DIR ...

The job builds the strategy for the stage, with each upstream run's final weights and its
held-out loss per domain after its last step (models/upstream.py), and writes
- ``OUT/weights.json``: ``initial_weights()`` as the weights the next stage trains on;
- ``OUT/fit.json``: the strategy's ``fit_report()`` (how it chose them);
- ``OUT/run.json`` last, the marker the workflow waits for: no steps, no parameters, no FLOPs
  (the fit is a regression on a handful of numbers, not a training run), its inputs (the
  upstream runs' digests, the data's) and provenance.
It imports no torch. A fit of the default grid's 7 runs takes about 8 s: start-up, five LightGBM
fits (one per fold and the final one) and the 100,000 candidates.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from mixbench import config as cfg
from mixbench.cli import add_run_arguments, main_guard
from mixbench.errors import ConfigError
from mixbench.io import remove_stale_temporaries, write_json
from mixbench.provenance import provenance
from mixbench import training_log
from mixbench.runlock import RunLock
from models.run_inputs import chain_fingerprint, run_inputs
from models.run_record import RunRecord
from models.upstream import read_upstream, strategy_context
from strategies import get_strategy_class, grid_config
from strategies import runs as strategy_runs
from strategies.base import validate_weights

STAGE = "fit"


def fit(config: dict, size: str, strategy_name: str, seed: int, out: Path, upstream: dict[str, Path]) -> RunRecord:
    """Compute and write the fit stage's outputs; returns its run.json record."""
    start = time.time()
    chain = strategy_runs.run_chain(config, strategy_name, STAGE, size)  # refuses a strategy without a fit stage
    expected = set(chain) - {STAGE}
    if set(upstream) != expected:
        raise ConfigError(f"--upstream must name exactly the runs before {strategy_name}'s fit "
                          f"({cfg.describe_stages(sorted(expected, key=list(chain).index))}); "
                          f"missing {sorted(expected - set(upstream))}, unexpected {sorted(set(upstream) - expected)}")
    run = cfg.Run(strategy=strategy_name, stage=STAGE, size=chain[STAGE]["size"], seed=seed)
    cls = get_strategy_class(cfg.strategy_class_name(config, strategy_name))
    context = strategy_context(config, run, 0, upstream, heldout=True)
    strategy = cls(context, **cfg.strategy_hparams(config, strategy_name))
    # What the final run's run.json records of this one, through its digest (models/run_inputs.py).
    inputs = run_inputs(config, chain_fingerprint(config, run, chain), upstream)
    weights = validate_weights(strategy.initial_weights(), len(context.domains), strategy_name, 0)
    out.mkdir(parents=True, exist_ok=True)
    report = strategy.fit_report()
    if report is not None:
        write_json(out / "fit.json", report)
    write_json(out / "weights.json", {"domains": list(context.domains), "initial_weights": weights,
                                      "final_weights": weights})
    record = RunRecord(
        strategy=run.strategy, stage=str(run.stage), size=run.size, steps=0, parameters=0, tokens=0,
        train_flops=0, token_passes={}, flops=0, train_seconds=0.0, wall_seconds=round(time.time() - start, 2),
        heldout_seconds=0.0, inputs=inputs, allow_static=grid_config.static_allowed(config, strategy_name, STAGE),
        **provenance(cfg.config_hash(config), seed))
    record.write(out / "run.json")
    return record


@main_guard
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, size_help="the size of the final model the fit feeds",
                      upstream_help="the runs before the fit")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    config = grid_config.load(*args.config)
    args.out.mkdir(parents=True, exist_ok=True)
    with training_log.kept(args.out), RunLock(args.out):
        for path in remove_stale_temporaries(args.out, recursive=False, locked=True):
            print(f"removed {path}, left by a write that a crash cut short", file=sys.stderr)
        record = fit(config, args.size, args.strategy, args.seed, args.out, read_upstream(args.upstream))
    print(f"{args.strategy} seed {args.seed}: fit written to {args.out} in {record.wall_seconds} s", file=sys.stderr)


if __name__ == "__main__":
    main()
