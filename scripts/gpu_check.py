"""Check the CUDA path on a GPU machine: every strategy trains there, and CUDA agrees with the CPU.

    python scripts/gpu_check.py --out results/gpu-check [--steps 40]

Builds the test fixture corpus, then trains the tiny model (a) with uniform weights on the CPU
and on CUDA in fp32, bf16 and bf16 + torch.compile, comparing their loss curves, and (b) every
strategy's stages on CUDA in bf16: DoReMi (reference, proxy, final), DoGE's proxy and DoGraph's
online run with its gradient probes. Writes ``{out}/gpu_check.json`` and prints a summary; it
fails on an error, a non-finite loss or weights off the simplex. Needs no network.
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


def main() -> None:
    import torch

    from corpus import build, tokenizer, tokens
    from models.train import train

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu-check"))
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--device", default="cuda", help="cpu only to try this script out without a GPU")
    args = parser.parse_args()
    dev = args.device
    if dev == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this check is for a GPU machine")
    root = args.out.resolve()
    base = make_config(root, args.steps)
    if not (root / "data" / "tokens" / "meta.json").exists():  # a data folder built elsewhere is reused
        build.build(base)
        tokenizer.build(base)
        tokens.build(base)
    report = {"device": torch.cuda.get_device_name(0) if dev == "cuda" else "cpu", "torch": torch.__version__,
              "runs": {}}

    variants = {"cpu-fp32": dict(device="cpu", precision="fp32"), f"{dev}-fp32": dict(device=dev, precision="fp32"),
                f"{dev}-bf16": dict(device=dev, precision="bf16"),
                f"{dev}-bf16-compile": dict(device=dev, precision="bf16", compile=True)}
    for name, training in variants.items():
        started = time.time()
        out = root / "runs" / "uniform" / name
        assert train(make_config(root, args.steps, **training), "tiny", "uniform", 0, "final", out, {})
        report["runs"][f"uniform/{name}"] = {**check_run(out), "wall_s": round(time.time() - started, 1)}
    cpu = losses(root / "runs" / "uniform" / "cpu-fp32")
    report["max_abs_loss_difference_vs_cpu"] = {
        name: float(np.abs(losses(root / "runs" / "uniform" / name) - cpu).max()) for name in list(variants)[1:]}

    gpu = make_config(root, args.steps, device=dev, precision="bf16")
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
    (root / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    yaml.safe_dump(gpu, open(root / "config.yaml", "w"))  # for the throughput benchmark
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
