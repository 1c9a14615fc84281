"""``scripts/gpu_check.py --curves``: the tiny model trained end to end by models/train.py, uniform
on the CPU and on the device in fp32, bf16 and bf16 compiled (how far each loss curve drifts from
the CPU's), then every strategy's stages on the device in bf16: DoReMi (reference, proxy, final),
DoGE's proxy, DoGraph's online run with its probes, a RegMix swarm run. It fails on an error, a
non-finite loss or weights off the simplex."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import yaml

from mixbench import config as cfg
from strategies import grid_config
from models.train import train

REPO = Path(__file__).resolve().parents[1]


def make_config(root: Path, steps: int, **training) -> dict:
    raw = yaml.safe_load((REPO / "tests" / "config" / "test.yaml").read_text())
    raw.update(data_dir=str(root / "data"), runs_dir=str(root / "runs"), results_dir=str(root / "results"))
    raw["corpus"]["path"] = str(REPO / "tests" / "fixtures" / "corpus.jsonl")
    return grid_config.validate(cfg.deep_merge(raw, {
        "grid": {"sizes": ["tiny"], "strategies": ["uniform", "doremi", "doge", "dograph", "regmix"]},
        "training": {"steps": steps, "seq_len": 128, "batch_size": 16, "micro_batch_size": 16, "warmup_steps": 5,
                     **training},
        "stages": {"reference": {"size": "tiny", "steps": steps // 2}, "proxy": {"size": "tiny", "steps": steps // 2},
                   "swarm": {"size": "tiny", "steps": steps // 2}},
    }))


def losses(run: Path) -> np.ndarray:
    return np.array([float(r["loss"]) for r in csv.DictReader(open(run / "log.csv"))])


def check_run(run: Path, started: float) -> dict:
    loss = losses(run)
    weights = np.asarray(json.loads((run / "weights.json").read_text())["final_weights"])
    if not np.all(np.isfinite(loss)):
        raise SystemExit(f"{run}: non-finite loss")
    if abs(weights.sum() - 1) > 1e-6 or weights.min() < 0:
        raise SystemExit(f"{run}: final weights off the simplex: {weights}")
    return {"first_loss": float(loss[0]), "last_loss": float(loss[-1]), "seconds": round(time.time() - started, 1)}


def curves(root: Path, args) -> dict:
    dev, runs = args.device, {}
    variants = {"cpu-fp32": dict(device="cpu", precision="fp32"),
                f"{dev}-fp32": dict(device=dev, precision="fp32", compile=False),
                f"{dev}-bf16": dict(device=dev, precision="bf16", compile=False),
                f"{dev}-bf16-compile": dict(device=dev, precision="bf16", compile=True)}
    for name, training in variants.items():
        started, out = time.time(), root / "runs" / "uniform" / name
        assert train(make_config(root, args.steps, **training), "tiny", "uniform", 0, "final", out, {})
        runs[f"uniform/{name}"] = check_run(out, started)
    cpu = losses(root / "runs" / "uniform" / "cpu-fp32")
    drift = {name: float(np.abs(losses(root / "runs" / "uniform" / name) - cpu).max()) for name in list(variants)[1:]}
    device = make_config(root, args.steps, device=dev, precision="bf16", compile=False)
    plan = [("doremi", "reference", {}), ("doremi", "proxy", {"reference": "reference"}),
            ("doremi", "final", {"reference": "reference", "proxy": "proxy"}),
            ("doge", "proxy", {}), ("dograph", "final", {}), ("regmix", "swarm-0", {})]
    for strategy, stage, upstream in plan:
        started, out = time.time(), root / "runs" / strategy / stage
        assert train(device, "tiny", strategy, 0, stage, out, {k: root / "runs" / strategy / v for k, v in upstream.items()})
        runs[f"{strategy}/{stage}"] = check_run(out, started)
    return {"runs": runs, "max_abs_loss_difference_vs_cpu": drift}
