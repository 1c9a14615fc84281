"""The host time a strategy's own work takes per step, against the step it rides on.

    python -m benchmarks.strategy_overhead --config config/paper.yaml [--strategies odm ado aioli]
        [--steps N] [--step-seconds S]

An online strategy's ``update`` runs on the host between two steps (ADO's power-law fits, ODM's
bandit, Aioli's solves). This benchmark drives a strategy through a whole run of its final stage
as the config sets it up (``training.steps``, its hyperparameters), without a model: each step's
per-domain losses follow a power law in the tokens seen, with noise, and its tokens per domain are
drawn from the weights the strategy returned (the held-out loss, where the strategy asks for
it, follows the same law). It times everything the loop calls on the strategy at a step
(``needs_step_stats``, ``record``, ``update``, ``trace``) and reports, per strategy, the mean
and the largest per-step time and their share of a step of ``--step-seconds``, by default the
cost plan's estimate for the grid's first size (eval/analysis/plan_costs.py: its FLOPs per
token × the batch's tokens at the optimistic and the conservative MFU on a 989 TFLOP/s GPU): an
estimate of the step, a measurement of the strategy. Written to
``{results_dir}/benchmarks/strategy_overhead.json``; nothing asserts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from eval.analysis.plan_costs import PEAK_TFLOPS, MfuTable, flops_per_token, parameters, stage_strategy
from mixbench.cli import add_config_argument, main_guard
from mixbench.errors import ConfigError
from mixbench.io import write_json
from strategies import StepStats, grid_config, validate_weights
from strategies import runs as strategy_runs

SIMULATED = {"heldout_loss"}  # the signals this benchmark can stand in for


def synthetic_loss(tokens_seen: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Per-domain loss ε + β n^(−α) in the tokens seen (thousands), each domain its own law, with noise."""
    k = len(tokens_seen)
    floor, scale, exponent = np.linspace(1.5, 3.0, k), np.linspace(4.0, 8.0, k), np.linspace(0.2, 0.5, k)
    clean = floor + scale * (1.0 + tokens_seen / 1e3) ** -exponent
    return clean * (1.0 + 0.02 * rng.standard_normal(k))


def drive(strategy, *, steps: int, batch_tokens: int, seed: int = 0) -> np.ndarray:
    """Every step's host time in the strategy's calls, seconds, shape (steps,)."""
    k = len(strategy.context.domains)
    rng = np.random.default_rng(seed)
    unknown = set(strategy.required_signals()) - SIMULATED
    if unknown:
        raise ConfigError(f"strategy {strategy.context.name!r} needs signal(s) {sorted(unknown)}, which only a "
                          f"model computes: benchmark it with benchmarks.throughput instead")
    weights = validate_weights(strategy.initial_weights(), k, strategy.context.name, 0)
    seen, times = np.zeros(k), np.zeros(steps)
    for step in range(1, steps + 1):
        tokens = rng.multinomial(batch_tokens, weights).astype(np.float64)
        loss = np.where(tokens > 0, synthetic_loss(seen, rng), np.nan)
        extra = {name: synthetic_loss(seen, rng) for name in strategy.required_signals()
                 if strategy.signal_due(name, step)}
        stats = StepStats(step, 1e-3, loss, tokens, extra)
        started = time.perf_counter()
        strategy.record(weights)
        new = strategy.update(stats) if strategy.needs_step_stats(step) else None
        strategy.trace()
        times[step - 1] = time.perf_counter() - started
        if new is not None:
            weights = validate_weights(new, k, strategy.context.name, step)
        seen += tokens
    return times


def estimated_step_seconds(config: dict) -> tuple[float, float]:
    """(optimistic, conservative) seconds of one step of the grid's first size, from the cost plan."""
    size, training = config["grid"]["sizes"][0], config["training"]
    flops = flops_per_token(size, config) * training["batch_size"] * training["seq_len"]
    optimistic, conservative = MfuTable().at(parameters(size, config))
    peak = PEAK_TFLOPS * 1e12
    return flops / (optimistic * peak), flops / (conservative * peak)


@main_guard
def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--strategies", nargs="+", default=["odm", "ado", "aioli"])
    parser.add_argument("--steps", type=int, help="steps to drive (default: training.steps)")
    parser.add_argument("--step-seconds", type=float, help="the step to compare with (default: the plan's estimate)")
    args = parser.parse_args(argv)
    config = grid_config.load(*args.config)
    training = config["training"]
    steps = args.steps or training["steps"]
    step_s = (args.step_seconds,) * 2 if args.step_seconds else estimated_step_seconds(config)
    report = {"steps": steps, "batch_tokens": training["batch_size"] * training["seq_len"],
              "step_seconds": {"optimistic": step_s[0], "conservative": step_s[1],
                               "source": "given" if args.step_seconds else "cost plan estimate"},
              "strategies": {}}
    for name in args.strategies:
        stages = strategy_runs.strategy_stages(config, name)  # an unknown name: the registry's error
        if stages != ("final",):
            raise ConfigError(f"strategy {name!r} runs {', '.join(stages)}: its final run reads runs before it, "
                              f"which this benchmark does not make; benchmark it with benchmarks.throughput")
        strategy = stage_strategy(config, name, "final", steps)
        times = drive(strategy, steps=steps, batch_tokens=report["batch_tokens"])
        mean, largest = float(times.mean()), float(times.max())
        report["strategies"][name] = {
            "mean_seconds_per_step": mean, "max_seconds_in_a_step": largest, "total_seconds": float(times.sum()),
            "share_of_a_step": {"at_optimistic_step": mean / step_s[0], "at_conservative_step": mean / step_s[1]}}
        print(f"{name:>10}: {mean * 1e3:.3f} ms a step on average, {largest:.3f} s at most, "
              f"{mean / step_s[0]:.3%} of a {step_s[0]:.3f} s step ({mean / step_s[1]:.3%} of {step_s[1]:.3f} s)")
    out = Path(config["results_dir"]) / "benchmarks" / "strategy_overhead.json"
    write_json(out, report)
    print(f"written to {out}")


if __name__ == "__main__":
    main()
