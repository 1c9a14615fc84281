"""A fake finished grid in the exact file formats of real runs, for the table and figure tests.

Numbers are chosen so results are known: every strategy's bits per byte is uniform's minus a
fixed shift on every seed and domain, so the paired difference and its interval are that shift.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from mixbench.config import cell_runs, run_dir
from mixbench.io import write_json

SHIFT = {"uniform": 0.0, "natural": -0.05, "doremi": -0.1, "dograph": 0.02}
PARAMS = {"test": 30_000, "tiny": 1_460_000}
RUN_INFO = {"config_hash": "abc123abc123", "git_commit": "0" * 40,
            "versions": {"python": "3.11", "torch": "2.13.0", "transformers": "5.0", "lm_eval": "0.4.13"}}


def write_grid(config: dict) -> None:
    domains = config["corpus"]["domains"]
    k = len(domains)
    rng = np.random.default_rng(0)
    base = {(size, seed, d): 3.0 - 0.3 * (size == "tiny") + rng.normal(0, 0.05)
            for size in config["grid"]["sizes"] for seed in config["grid"]["seeds"] for d in domains}
    for size in config["grid"]["sizes"]:
        for strategy in config["grid"]["strategies"]:
            for seed in config["grid"]["seeds"]:
                cell = Path(config["runs_dir"]) / size / strategy / f"seed{seed}"
                weights = rng.dirichlet(np.ones(k)) if strategy != "uniform" else np.full(k, 1 / k)
                for stage, spec in cell_runs(config, size, strategy).items():  # a shared proxy: written again
                    write_stage(Path(run_dir(config, spec["size"], strategy, seed, stage)), strategy, stage,
                                spec["size"], seed, domains, weights, rng)
                bpb = {d: base[size, seed, d] + SHIFT[strategy] for d in domains}
                write_json(cell / "final" / "eval" / "perplexity.json", {"tasks": {
                    d: {"bits_per_byte": v, "byte_perplexity": 2**v, "word_perplexity": 2 ** (5 * v), "documents": 4}
                    for d, v in bpb.items()}})
                tasks = {}
                for d in domains:
                    acc = float(rng.uniform(0.2, 0.4))
                    tasks[f"mixbench_cloze_{d}"] = {"group": "mixbench_cloze", "domain": d, "examples": 10,
                                                    "metrics": {"acc": acc, "acc_stderr": 0.1}}
                    tasks[f"mixbench_choice_{d}"] = {"group": "mixbench_choice", "domain": d, "examples": 10,
                                                     "metrics": {"acc": acc, "acc_stderr": 0.1, "acc_norm": acc + 0.01,
                                                                 "acc_norm_stderr": 0.1}}
                write_json(cell / "final" / "eval" / "downstream.json", {"tasks": tasks})


def write_stage(out: Path, strategy, stage, size, seed, domains, weights, rng) -> None:
    k, steps, tokens = len(domains), 30, 30 * 8 * 32
    n = PARAMS[size]
    write_json(out / "weights.json", {"domains": domains, "initial_weights": [1 / k] * k,
                                      "final_weights": weights.tolist()})
    write_json(out / "run.json", {
        "strategy": strategy, "stage": stage, "size": size, "steps": steps, "parameters": n, "tokens": tokens,
        "train_flops": 6 * n * tokens, "token_passes": {"forward": tokens, "backward": tokens, "reference_forward": 0},
        "flops": 6 * n * tokens * (1.5 if stage == "proxy" else 1), "train_seconds": 10.0, "wall_seconds": 12.0,
        "seed": seed, **RUN_INFO})
    records = []
    if strategy == "doremi" and stage == "proxy":
        records = [{"step": s, "alpha": rng.dirichlet(np.ones(k)).tolist()} for s in range(1, steps + 1)]
    if strategy == "dograph" and stage == "final":
        for s in (10, 20):
            affinity = rng.uniform(0, 1, (k, k))
            affinity = np.triu(affinity, 1) + np.triu(affinity, 1).T
            records.append({"step": s, "alpha": rng.dirichlet(np.ones(k)).tolist(), "affinity": affinity.tolist(),
                            "communities": [list(range(k // 2)), list(range(k // 2, k))]})
            probes = out / "probes"
            probes.mkdir(parents=True, exist_ok=True)
            rows = np.repeat(np.arange(k), 4)
            features = rng.normal(size=(4 * k, 64)) + rows[:, None]  # domains apart
            np.savez_compressed(probes / f"step{s:06d}.npz", features=features.astype(np.float32), domains=rows,
                                target=rng.normal(size=(2 * k, 64)).astype(np.float32), domain_names=np.array(domains))
    if records:
        (out / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
