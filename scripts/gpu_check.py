"""Check the CUDA path on a GPU machine: every strategy trains there, CUDA agrees with the CPU, and how fast.

    python scripts/gpu_check.py --out results/gpu-check [--steps 40] [--no-throughput]
    python scripts/gpu_check.py --device cpu --no-agreement --throughput --throughput-size test \\
        --seq-len 32 --batch-size 8 --micro-batch-size 4 --rounds 2 --throughput-compile off   # on a CPU

Builds the test fixture corpus, then

- agreement: trains the tiny model (a) with uniform weights on the CPU and on CUDA in fp32, bf16
  and bf16 + torch.compile, comparing their loss curves, and (b) every strategy's stages on CUDA
  in bf16, not compiled: DoReMi (reference, proxy, final), DoGE's proxy and DoGraph's online run
  with its gradient probes. It fails on an error, a non-finite loss or weights off the simplex.
- throughput (on by default on CUDA): benchmarks/throughput.py on GPT-2 small at sequence 1024
  (batch 32 x 1024 by default), each strategy's working stage (uniform's final run, DoReMi's and
  DoGE's proxies, DoGraph's final run) and the minimal hand-written step, with torch.compile off
  and on: tokens/s, MFU, peak memory, the ratio to uniform and the loop's overhead. The fixture
  corpus's BPE has 512 tokens, and no corpus at hand is large enough for a BPE to learn GPT-2's
  50,257 (nor is GPT-2's own BPE on the machine, which has no network): the models are built
  with GPT-2's vocabulary of 50,257 and fed the fixture's token ids. A step costs the same
  whichever ids occur (an embedding gather, then the 768 x 50,304 output matmul and a softmax
  over 50,257 columns for every token), so tokens/s and MFU are GPT-2 small's. The steps of
  DoGraph's probes are amortised over the benchmark config's 300-step run (benchmarks/fixture.yaml).

Writes ``{out}/gpu_check.json`` and prints a summary, with the seconds each part took. Needs no
network. Meant to take under 8 minutes on one H200, most of it compilation; an estimate, not yet
measured (``--rounds``, ``--throughput-compile on`` and ``--no-agreement`` shorten it).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mixbench import config as cfg  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def make_config(root: Path, steps: int, **training) -> dict:
    raw = yaml.safe_load((REPO / "tests" / "config" / "test.yaml").read_text())
    raw.update(data_dir=str(root / "data"), runs_dir=str(root / "runs"), results_dir=str(root / "results"))
    raw["corpus"]["path"] = str(REPO / "tests" / "fixtures" / "corpus.jsonl")
    raw = cfg.deep_merge(raw, {
        "grid": {"sizes": ["tiny"], "strategies": ["uniform", "doremi", "doge", "dograph"]},
        "training": {"steps": steps, "seq_len": 128, "batch_size": 16, "micro_batch_size": 16, "warmup_steps": 5,
                     **training},
        "stages": {"reference": {"size": "tiny", "steps": steps // 2}, "proxy": {"size": "tiny", "steps": steps // 2}},
    })
    return cfg.validate(raw)


def losses(run: Path) -> np.ndarray:
    return np.array([float(r["loss"]) for r in csv.DictReader(open(run / "log.csv"))])


def step_seconds(run: Path) -> float:
    times = [float(r["step_s"]) for r in csv.DictReader(open(run / "log.csv"))]
    return float(np.median(times[5:])) if len(times) > 5 else float(np.median(times))


def check_run(run: Path) -> dict:
    loss = losses(run)
    weights = np.asarray(json.loads((run / "weights.json").read_text())["final_weights"])
    if not np.all(np.isfinite(loss)):
        raise SystemExit(f"{run}: non-finite loss")
    if abs(weights.sum() - 1) > 1e-6 or weights.min() < 0:
        raise SystemExit(f"{run}: final weights off the simplex: {weights}")
    info = json.loads((run / "run.json").read_text())
    return {"first_loss": float(loss[0]), "last_loss": float(loss[-1]), "median_step_s": step_seconds(run),
            "flops": info["flops"], "final_weights": weights.round(4).tolist()}


GPT2_VOCAB = 50257
# The goal for uniform, GPT-2 small at sequence 1024 on one H200 (llm.c: ~460k tokens/s per H100).
GOAL = {"tokens_per_s": 400_000, "mfu": 0.40}
STRATEGIES = ["uniform", "doremi", "doge", "dograph"]  # the benchmark runs each one's working stage


def agreement(root: Path, args, dev: str, report: dict) -> None:
    import torch

    from models.train import train

    variants = {"cpu-fp32": dict(device="cpu", precision="fp32"),
                f"{dev}-fp32": dict(device=dev, precision="fp32", compile=False),
                f"{dev}-bf16": dict(device=dev, precision="bf16", compile=False),
                f"{dev}-bf16-compile": dict(device=dev, precision="bf16", compile=True)}
    for name, training in variants.items():
        started = time.time()
        out = root / "runs" / "uniform" / name
        assert train(make_config(root, args.steps, **training), "tiny", "uniform", 0, "final", out, {})
        report["runs"][f"uniform/{name}"] = {**check_run(out), "wall_s": round(time.time() - started, 1)}
    cpu = losses(root / "runs" / "uniform" / "cpu-fp32")
    report["max_abs_loss_difference_vs_cpu"] = {
        name: float(np.abs(losses(root / "runs" / "uniform" / name) - cpu).max()) for name in list(variants)[1:]}

    # Not compiled: each compilation takes tens of seconds, and the throughput part runs every
    # strategy's working stage compiled, at the size where compilation matters.
    gpu = make_config(root, args.steps, device=dev, precision="bf16", compile=False)
    plan = [("doremi", "reference", {}), ("doremi", "proxy", {"reference": "reference"}),
            ("doremi", "final", {"reference": "reference", "proxy": "proxy"}),
            ("doge", "proxy", {}), ("dograph", "final", {})]
    for strategy, stage, upstream in plan:
        started = time.time()
        out = root / "runs" / strategy / stage
        ups = {k: root / "runs" / strategy / v for k, v in upstream.items()}
        assert train(gpu, "tiny", strategy, 0, stage, out, ups)
        report["runs"][f"{strategy}/{stage}"] = {**check_run(out), "wall_s": round(time.time() - started, 1)}
    if dev == "cuda":
        report["peak_cuda_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    yaml.safe_dump(gpu, open(root / "config.yaml", "w"))  # for running the throughput benchmark by hand


def throughput_config(root: Path, args, dev: str, compiled: bool) -> dict:
    """benchmarks/fixture.yaml (the default grid's run lengths, every strategy at its defaults) on the
    data built here, at the requested size and batch shape."""
    raw = yaml.safe_load((REPO / "benchmarks" / "fixture.yaml").read_text())
    raw.update(data_dir=str(root / "data"), runs_dir=str(root / "runs"), results_dir=str(root / "results"))
    raw["corpus"]["path"] = str(REPO / "tests" / "fixtures" / "corpus.jsonl")
    # The benchmark evaluates nothing; the test config's short continuations let `--throughput-size test` validate.
    downstream = yaml.safe_load((REPO / "tests" / "config" / "test.yaml").read_text())["downstream"]
    return cfg.validate(cfg.deep_merge(raw, {
        "grid": {"sizes": [args.throughput_size]}, "downstream": downstream,
        "training": {"device": dev, "precision": "auto", "compile": compiled, "peak_tflops": args.peak_tflops,
                     "seq_len": args.seq_len,
                     "batch_size": args.batch_size, "micro_batch_size": args.micro_batch_size or args.batch_size}}))


def throughput(root: Path, args, dev: str) -> dict:
    """The throughput benchmark's report for each compile setting, and what compiling gained."""
    import gc

    import torch
    import torch._dynamo

    from benchmarks.throughput import measure, print_report

    results = {}
    for setting in args.throughput_compile:
        torch._dynamo.reset()  # no compiled graphs or recompilation counts carried from earlier models
        started = time.time()
        config = throughput_config(root, args, dev, compiled=setting == "on")
        report = measure(config, STRATEGIES, args.throughput_size, args.rounds, vocab_size=args.throughput_vocab)
        report["wall_s"] = round(time.time() - started, 1)
        print_report(report)
        print(f"(compile {setting}: {report['wall_s']} s)", flush=True)
        results[f"compile-{setting}"] = report
        gc.collect()  # the benchmark's models go before the next setting builds its own
        if dev == "cuda":
            torch.cuda.empty_cache()
    if {"compile-on", "compile-off"} <= set(results):
        on, off = (results[f"compile-{s}"]["strategies"] for s in ("on", "off"))
        results["compile_speedup"] = {name: on[name]["tokens_per_s"] / off[name]["tokens_per_s"] for name in on}
        print("tokens/s compiled over not: " + ", ".join(f"{n} {x:.2f}x" for n, x in results["compile_speedup"].items()))
    if args.throughput_size == "small" and args.seq_len == 1024 and args.throughput_vocab == GPT2_VOCAB:
        best = max((results[f"compile-{s}"]["strategies"]["uniform"] for s in args.throughput_compile),
                   key=lambda uniform: uniform["tokens_per_s"])
        met = best["tokens_per_s"] >= GOAL["tokens_per_s"] and (best["mfu"] or 0) >= GOAL["mfu"]
        results["goal"] = {**GOAL, "for": "uniform, GPT-2 small at sequence 1024, one H200",
                           "measured_on": results[f"compile-{args.throughput_compile[0]}"]["device"], "met": met}
        print(f"goal for {results['goal']['for']}: >= {GOAL['tokens_per_s']:,} tokens/s and MFU >= {GOAL['mfu']:.0%}:"
              f" {'met' if met else 'NOT met'} (best: {best['tokens_per_s']:,.0f} tokens/s)")
    return results


def main() -> None:
    import torch

    from corpus import build, tokenizer, tokens

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"))
    parser.add_argument("--device", default="cuda", help="cpu only to try this script out without a GPU")
    parser.add_argument("--agreement", action=argparse.BooleanOptionalAction, default=True,
                        help="the tiny model's CUDA-vs-CPU loss curves and every strategy's stages on the device")
    parser.add_argument("--steps", type=int, default=40, help="training steps of each agreement run")
    parser.add_argument("--throughput", action=argparse.BooleanOptionalAction, default=None,
                        help="the throughput benchmark (default: on CUDA only)")
    parser.add_argument("--throughput-size", default="small")
    parser.add_argument("--throughput-vocab", type=int, default=GPT2_VOCAB, help="the benchmark models' vocabulary")
    parser.add_argument("--throughput-compile", nargs="+", choices=["off", "on"], default=["off", "on"])
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak bf16 TFLOP/s for MFU (default: models/throughput.py's table)")
    parser.add_argument("--seq-len", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--micro-batch-size", type=int, default=None, help="default: the batch size")
    parser.add_argument("--rounds", type=int, default=8, help="interleaved timing rounds of the benchmark")
    args = parser.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    run_throughput = dev == "cuda" if args.throughput is None else args.throughput
    started = time.time()
    root = args.out.resolve()
    if not (root / "data" / "tokens" / "meta.json").exists():  # a data folder built elsewhere is reused
        base = make_config(root, args.steps)
        build.build(base)
        tokenizer.build(base)
        tokens.build(base)
    report = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__,
              "runs": {}}
    if args.agreement:
        agreement(root, args, dev, report)
    if run_throughput:
        report["throughput"] = throughput(root, args, dev)
    report["wall_s"] = round(time.time() - started, 1)
    (root / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps({k: v for k, v in report.items() if k != "throughput"}, indent=2))


if __name__ == "__main__":
    main()
