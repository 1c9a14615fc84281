"""What a grid will train and an estimate of what it costs, before anything runs.

    python -m eval.analysis.plan --config config/paper.yaml [--mfu TABLE] [--startup-s 30/90]
        [--flop-ratios results/rehearsal/tables/compute.csv] [--ratio dograph:final=1.001]
        [--peak-tflops 989]

One row per distinct run kind (size, strategy, stage): how many runs the grid makes of it (a
reference or proxy of fixed size is shared by every final size, so it counts once per seed),
the jobs that train them (a fan-out stage's runs packed ``pack`` to a job), its parameters and
tokens, and its GPU-hours, optimistic and conservative. They are estimates, labelled as one:

    hours = FLOPs / (MFU × peak FLOP/s),   FLOPs = (6N + 12·L·d·T) × tokens × ratio

with 6N + 12·L·d·T the forward and backward FLOPs per token of a GPT-2 with N parameters,
L layers, width d and context T (Kaplan et al. 2020; the attention term as in PaLM, App. B),
``ratio`` a stage's FLOPs over its training passes, derived from the passes its step makes
(eval/analysis/plan_costs.py: DoReMi's reference forwards and second forward, DoGE's target batch,
DoGraph's probes), and the MFU of the model's size from an assumed table (``--mfu``). Two rows
follow the runs: every job's start-up (jobs × ``--startup-s`` × its GPUs) and the evaluation
of every final model (its held-out documents and downstream tasks at a low MFU).
``--flop-ratios`` takes finished runs' measured ratios (``flops / train_flops`` of a compute
table, e.g. the CPU rehearsal's) over the derived ones, ``--ratio STRATEGY:STAGE=X`` one by hand
over both; the table says where each came from. The peak defaults to an H100/H200's 989 dense
bf16 TFLOP/s.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from eval.analysis import plan_costs
from eval.analysis.plan_costs import MfuTable, flop_ratio, flops_per_token, parameters, parse_mfu
from mixbench import config as cfg
from mixbench.cli import add_config_argument, main_guard
from mixbench.errors import ConfigError, DataError
from strategies import grid_config
from strategies import runs as strategy_runs


def grid_runs(config: dict) -> pd.DataFrame:
    """One row per distinct run of the grid: size (its own), strategy, stage, seed, steps."""
    return pd.DataFrame([{"size": size, "strategy": strategy, "stage": stage, "seed": seed, "steps": run["steps"],
                          "feeds": run["feeds"]}
                         for (size, strategy, stage), run in strategy_runs.grid_runs(config).items()
                         for seed in config["grid"]["seeds"]])


def measured_ratios(path: Path) -> dict[tuple[str, str], float]:
    """(strategy, stage) -> FLOPs of all passes / training FLOPs, averaged over a compute table's rows."""
    if not path.is_file():
        raise DataError(f"{path} does not exist: run the grid it comes from first (e.g. `bash scripts/mixbench.sh rehearsal`)")
    table = pd.read_csv(path)
    table = table[table["train_flops"] > 0]  # a fit stage trains nothing
    stage = table["stage"].map(lambda stage: cfg.Stage.parse(stage).group)
    return (table["flops"] / table["train_flops"]).groupby([table["strategy"], stage]).mean().to_dict()


def parse_ratio(text: str) -> tuple[tuple[str, str], float]:
    """``STRATEGY:STAGE=X`` -> ((strategy, stage), X)."""
    key, _, value = text.partition("=")
    strategy, _, stage = key.partition(":")
    try:
        ratio = float(value)
    except ValueError:
        ratio = float("nan")
    if not strategy or not stage or not ratio >= 1:
        raise ConfigError(f"--ratio {text!r}: expected STRATEGY:STAGE=X with X >= 1, e.g. dograph:final=1.001")
    return (strategy, stage), ratio


def parse_pair(text: str, option: str) -> tuple[float, float]:
    """``A/B`` (optimistic/conservative) or ``A`` (both) as two non-negative numbers."""
    try:
        values = tuple(float(v) for v in text.split("/"))
    except ValueError:
        values = ()
    if len(values) not in (1, 2) or min(values) < 0:
        raise ConfigError(f"{option} {text!r}: expected OPTIMISTIC/CONSERVATIVE, e.g. 30/90")
    return (values[0], values[-1])


def run_kinds(config: dict, given: dict | None) -> pd.DataFrame:
    """The grid's trained runs, one row per (size, strategy, stage, feeds) with its count, jobs,
    tokens and FLOP ratio (``given`` over the derived one)."""
    runs = grid_runs(config)
    runs = runs[runs["steps"] > 0]  # a fit stage trains nothing
    # The runs of a fan-out stage (swarm-0 … swarm-{N-1}) are one row of N runs per seed.
    runs = runs.assign(group=runs["stage"].map(lambda stage: cfg.Stage.parse(stage).group), feeds=runs["feeds"].map(lambda s: ", ".join(dict.fromkeys(s))))
    keys = ["size", "strategy", "group", "feeds"]
    kinds = runs.groupby(keys, sort=False).agg(runs=("seed", "size"), first_run=("stage", "first"), steps=("steps", "first"),
                                               seeds=("seed", "nunique")).reset_index()
    training = config["training"]
    given = given or {}
    ratios, origins, jobs, devices = [], [], [], []
    for kind in kinds.itertuples():
        if (kind.strategy, kind.group) in given:
            ratios.append(given[kind.strategy, kind.group])
            origins.append("given")
        else:
            ratios.append(flop_ratio(config, kind.strategy, kind.first_run, kind.size))
            origins.append("derived")
        per_seed = kind.runs // kind.seeds
        jobs.append(kind.seeds * math.ceil(per_seed / cfg.stage_pack(config, kind.strategy, kind.first_run)))
        devices.append(cfg.run_resources(config, kind.strategy, kind.first_run, kind.size).ranks)
    tokens = kinds["steps"].astype(float) * training["batch_size"] * training["seq_len"]
    return kinds.drop(columns="first_run").rename(columns={"group": "stage"}).assign(
        jobs=jobs, devices_per_job=devices, tokens=tokens, ratio=ratios, ratio_origin=origins,
        parameters=kinds["size"].map(lambda s: parameters(s, config)))


def plan(config: dict, given: dict | None = None, peak_tflops: float = plan_costs.PEAK_TFLOPS, mfu: MfuTable = MfuTable(),
         startup_s: tuple[float, float] = plan_costs.STARTUP_S) -> pd.DataFrame:
    """Every run kind's estimated GPU-hours (``optimistic_*``, ``conservative_*``), then a
    ``start-up`` row (every job's start) and an ``evaluation`` row (every final model's)."""
    peak = peak_tflops * 1e12
    kinds = run_kinds(config, given)
    flops = kinds["size"].map(lambda s: flops_per_token(s, config)) * kinds["tokens"] * kinds["ratio"]
    for which, index in (("optimistic", 0), ("conservative", 1)):
        rate = kinds["parameters"].map(lambda n: mfu.at(n)[index]) * peak
        kinds[f"{which}_mfu"] = rate / peak
        kinds[f"{which}_hours_per_run"] = flops / rate / 3600
        kinds[f"{which}_hours"] = kinds[f"{which}_hours_per_run"] * kinds["runs"]
    startup = {"size": "", "strategy": "every job's", "stage": "start-up", "feeds": "", "jobs": int(kinds["jobs"].sum())}
    device_jobs = (kinds["jobs"] * kinds["devices_per_job"]).sum()
    finals = kinds[kinds["stage"] == "final"]
    evaluation = {"size": "", "strategy": "every final model's", "stage": "evaluation", "feeds": "",
                  "runs": int(finals["runs"].sum()), "jobs": int(finals["runs"].sum())}
    for which, index in (("optimistic", 0), ("conservative", 1)):
        startup[f"{which}_hours"] = device_jobs * startup_s[index] / 3600
        seconds = finals["size"].map(lambda s: plan_costs.evaluation_seconds(
            config, s, startup_s[index], plan_costs.EVAL_MFU[index], peak))
        evaluation[f"{which}_hours"] = float((seconds * finals["runs"]).sum() / 3600)
    return pd.concat([kinds, pd.DataFrame([startup, evaluation])], ignore_index=True)


def to_markdown(summary: pd.DataFrame, peak_tflops: float, mfu: MfuTable, startup_s: tuple[float, float]) -> str:
    runs = summary[summary["size"] != ""]

    def span(low: float, high: float) -> str:
        return f"{low:,.1f}" if f"{low:,.1f}" == f"{high:,.1f}" else f"{low:,.1f}-{high:,.1f}"

    shown = pd.DataFrame({
        "run (own size)": (summary["size"] + " " + summary["strategy"] + " " + summary["stage"]).str.strip(),
        "feeds final sizes": summary["feeds"],
        "runs": summary["runs"].map(lambda n: "" if pd.isna(n) else f"{int(n):,}"),
        "jobs": summary["jobs"].map(lambda n: f"{n:,}"),
        "parameters": runs["parameters"].map(lambda n: f"{n / 1e6:.0f}M"),
        "tokens per run": runs["tokens"].map(lambda n: f"{n / 1e9:.2f}B"),
        "FLOP ratio": runs["ratio"].map(lambda r: f"{r:.3g}") + " (" + runs["ratio_origin"] + ")",
        "MFU": runs.apply(lambda r: f"{r.optimistic_mfu:.0%}/{r.conservative_mfu:.0%}", axis=1),
        "GPU-h per run": runs.apply(lambda r: span(r.optimistic_hours_per_run, r.conservative_hours_per_run), axis=1),
        "GPU-h, all runs": summary.apply(lambda r: span(r.optimistic_hours, r.conservative_hours), axis=1),
    }).fillna("")
    optimistic, conservative = summary["optimistic_hours"].sum(), summary["conservative_hours"].sum()
    note = (f"Estimates, not measurements: {peak_tflops:g} TFLOP/s peak; MFU optimistic/conservative by "
            f"parameters: {mfu.describe()}; start-up {startup_s[0]:g}/{startup_s[1]:g} s per job and GPU; "
            f"evaluation forwards at {plan_costs.EVAL_MFU[0]:.0%}/{plan_costs.EVAL_MFU[1]:.0%} MFU.")
    return (f"{shown.to_markdown(index=False, disable_numparse=True)}\n\n"
            f"Total: {optimistic:,.0f} GPU-hours optimistic, {conservative:,.0f} conservative (est.). {note}\n")


@main_guard
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--flop-ratios", type=Path, help="compute.csv of finished runs (e.g. the rehearsal's): "
                        "their measured FLOP ratios over the derived ones")
    parser.add_argument("--ratio", action="append", default=[], metavar="STRATEGY:STAGE=X",
                        help="a FLOP ratio by hand, over the measured and derived ones (repeatable)")
    parser.add_argument("--peak-tflops", type=float, default=plan_costs.PEAK_TFLOPS, help="accelerator peak, dense bf16 (H100/H200: 989)")
    parser.add_argument("--mfu", type=parse_mfu, default=MfuTable(), metavar="TABLE",
                        help="assumed MFU, optimistic/conservative, by parameter count: LIMIT=OPT/CONS,...,inf=OPT/CONS "
                             f"(default {','.join(f'{l:g}={o}/{c}' for l, o, c in plan_costs.DEFAULT_MFU)}), "
                             "or one number for every size")
    parser.add_argument("--startup-s", default="/".join(f"{s:g}" for s in plan_costs.STARTUP_S), metavar="OPT/CONS",
                        help="seconds one job takes to start (Snakemake, imports, CUDA, compilation)")
    args = parser.parse_args(argv)
    if not args.peak_tflops > 0:
        raise ConfigError(f"--peak-tflops must be positive, got {args.peak_tflops}")
    config = grid_config.load(*args.config)
    startup = parse_pair(args.startup_s, "--startup-s")
    given = measured_ratios(args.flop_ratios) if args.flop_ratios else {}
    given.update(dict(parse_ratio(r) for r in args.ratio))
    summary = plan(config, given, args.peak_tflops, args.mfu, startup)
    print(to_markdown(summary, args.peak_tflops, args.mfu, startup), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
