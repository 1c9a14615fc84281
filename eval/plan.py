"""What a grid will train and an estimate of what it costs, before anything runs.

    python -m eval.plan --config config/config.yaml config/paper.yaml
        [--flop-ratios results/rehearsal/tables/compute.csv] [--ratio dograph:final=1.001]
        [--peak-tflops 989] [--mfu 0.4]

One row per distinct run kind (size, strategy, stage): how many runs the grid makes of it (a
reference or proxy of fixed size is shared by every final size, so it counts once per seed),
its parameters and tokens, and its GPU-hours. GPU-hours are an estimate, labelled as one:

    hours = FLOPs / (MFU × peak FLOP/s),   FLOPs = (6N + 12·L·d·T) × tokens × ratio

with 6N + 12·L·d·T the forward and backward FLOPs per token of a GPT-2 with N parameters,
L layers, width d and context T (Kaplan et al. 2020; the attention term as in PaLM, App. B),
and ``ratio`` a strategy's own extra passes (DoReMi's reference forwards, DoGE's target
batch, DoGraph's probes) as ``flops / train_flops`` of finished runs' compute table, e.g.
the CPU rehearsal's; ``--ratio STRATEGY:STAGE=X`` sets one by hand (where the measured run's
schedule differs from the planned grid's). Without either the ratio is 1 (training passes only)
and the table says so. The defaults assume an H100/H200 (989 dense bf16 TFLOP/s) at 40% MFU.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from mixbench import config as cfg
from mixbench.cli import add_config_argument, main_guard
from mixbench.errors import ConfigError, DataError
from models.sizes import SIZES, approx_parameters

GPT2_VOCAB = 50257


def vocab_size(config: dict) -> int:
    """The tokenizer's vocabulary: a trained BPE's configured size, else GPT-2's BPE."""
    return config["tokenizer"]["vocab_size"] if config["tokenizer"]["kind"] == "bpe" else GPT2_VOCAB


def flops_per_token(size: str, vocab: int, seq_len: int) -> int:
    shape = SIZES[size]
    return 6 * approx_parameters(shape, vocab) + 12 * shape.n_layer * shape.n_embd * seq_len


def grid_runs(config: dict) -> pd.DataFrame:
    """One row per distinct run of the grid: size (its own), strategy, stage, seed, steps."""
    rows = {}
    for final_size in config["grid"]["sizes"]:
        for strategy in config["grid"]["strategies"]:
            for stage, spec in cfg.cell_runs(config, final_size, strategy).items():
                for seed in config["grid"]["seeds"]:
                    key = (spec["size"], strategy, stage, seed)
                    rows.setdefault(key, {"size": spec["size"], "strategy": strategy, "stage": stage, "seed": seed,
                                          "steps": spec["steps"], "feeds": []})["feeds"].append(final_size)
    return pd.DataFrame(rows.values())


def measured_ratios(path: Path) -> dict[tuple[str, str], float]:
    """(strategy, stage) -> FLOPs of all passes / training FLOPs, averaged over a compute table's rows."""
    if not path.is_file():
        raise DataError(f"{path} does not exist: run the grid it comes from first (e.g. `bash scripts/mixbench.sh rehearsal`)")
    table = pd.read_csv(path)
    table = table[table["train_flops"] > 0]  # a fit stage trains nothing
    stage = table["stage"].map(cfg.stage_group)
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


def plan(config: dict, ratios: dict | None, peak_tflops: float, mfu: float, unlisted: float = float("nan")) -> pd.DataFrame:
    """The grid's distinct runs with their estimated GPU-hours; ``unlisted`` is the ratio of a
    (strategy, stage) that ``ratios`` lacks (nan: an error for the caller to report)."""
    runs = grid_runs(config)
    runs = runs[runs["steps"] > 0]  # a fit stage trains nothing
    # The runs of a fan-out stage (swarm-0 … swarm-{N-1}) are one row of N runs per seed.
    runs = runs.assign(stage=runs["stage"].map(cfg.stage_group))
    training = config["training"]
    vocab = vocab_size(config)
    tokens = runs["steps"].astype(float) * training["batch_size"] * training["seq_len"]
    # Floats: FLOPs of a 355M model over 5B tokens overflow int64.
    per_token = runs["size"].map(lambda s: float(flops_per_token(s, vocab, training["seq_len"])))
    ratio = [ratios.get((s, st), unlisted) if ratios is not None else 1.0 for s, st in zip(runs.strategy, runs.stage)]
    runs = runs.assign(parameters=runs["size"].map(lambda s: approx_parameters(SIZES[s], vocab)), tokens=tokens,
                       ratio=ratio)
    runs["gpu_hours"] = per_token * tokens * runs["ratio"] / (mfu * peak_tflops * 1e12) / 3600
    runs["feeds"] = runs["feeds"].map(lambda sizes: ", ".join(dict.fromkeys(sizes)))
    keys = ["size", "strategy", "stage", "feeds"]
    summary = runs.groupby(keys, sort=False).agg(runs=("seed", "size"), parameters=("parameters", "first"),
                                                 tokens=("tokens", "first"), ratio=("ratio", "first"),
                                                 hours_per_run=("gpu_hours", "first"), hours=("gpu_hours", "sum"))
    return summary.reset_index()


def to_markdown(summary: pd.DataFrame, measured: bool, peak_tflops: float, mfu: float) -> str:
    shown = pd.DataFrame({
        "run (own size)": summary["size"] + " " + summary["strategy"] + " " + summary["stage"],
        "feeds final sizes": summary["feeds"],
        "runs": summary["runs"].astype(str),
        "parameters": summary["parameters"].map(lambda n: f"{n / 1e6:.0f}M"),
        "tokens per run": summary["tokens"].map(lambda n: f"{n / 1e9:.2f}B"),
        "FLOP ratio": summary["ratio"].map(lambda r: f"{r:.2f}" if measured else "1 (assumed)"),
        "GPU-h per run (est.)": summary["hours_per_run"].map(lambda h: f"{h:,.1f}"),
        "GPU-h, all runs (est.)": summary["hours"].map(lambda h: f"{h:,.1f}"),
    })
    total = summary["hours"].sum()
    note = (f"Estimate, not a measurement: {peak_tflops:g} TFLOP/s peak at {mfu:.0%} MFU"
            + ("; FLOP ratios of each strategy's extra passes as measured in finished runs or given by hand." if measured
               else "; training passes only (no strategy's extra passes)."))
    return f"{shown.to_markdown(index=False, disable_numparse=True)}\n\nTotal: {total:,.0f} GPU-hours (est.). {note}\n"


@main_guard
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_config_argument(parser)
    parser.add_argument("--flop-ratios", type=Path, help="compute.csv of finished runs (e.g. the rehearsal's)")
    parser.add_argument("--ratio", action="append", default=[], metavar="STRATEGY:STAGE=X",
                        help="a FLOP ratio by hand, over the measured one (repeatable)")
    parser.add_argument("--peak-tflops", type=float, default=989.0, help="accelerator peak, dense bf16 (H100/H200: 989)")
    parser.add_argument("--mfu", type=float, default=0.4, help="assumed model FLOP utilisation")
    args = parser.parse_args(argv)
    config = cfg.load(*args.config)
    ratios = measured_ratios(args.flop_ratios) if args.flop_ratios else None
    if args.ratio:
        ratios = {**(ratios or {}), **dict(parse_ratio(r) for r in args.ratio)}
    # Given by hand alone, the ratios leave every other run at its training passes.
    summary = plan(config, ratios, args.peak_tflops, args.mfu, unlisted=float("nan") if args.flop_ratios else 1.0)
    missing = summary[summary["ratio"].isna()]
    if len(missing):
        raise DataError(f"{args.flop_ratios} has no runs of {sorted(set(zip(missing.strategy, missing.stage)))}; "
                        "give the compute table of a grid with the same strategies")
    print(to_markdown(summary, ratios is not None, args.peak_tflops, args.mfu), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
