"""A fake finished grid in the exact file formats of real runs, for the table and figure tests.

Numbers are chosen so results are known: every strategy's bits per byte is uniform's minus a
fixed shift on every seed and domain, so the paired difference and its interval are that shift.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from eval.metrics import HELDOUT_METRICS
from mixbench.config import Run, Stage, run_dir
from mixbench.lineage import TRAINING_LOG, run_digest
from strategies.runs import cell_runs
from mixbench.io import write_json
from models.run_inputs import data_inputs, run_fingerprint
from mixbench.variants import variants
from models.runlog import HeldOutLog, StepLog

SHIFT = {"uniform": 0.0, "natural": -0.05, "doremi": -0.1, "dograph": 0.02, "regmix": -0.08}
STEPS, EVAL_EVERY = 30, 3


def shift(config: dict, strategy: str) -> float:
    """A strategy's known shift; a variant (grid.variants) has its base's."""
    return SHIFT[variants(config)[strategy].base] if strategy not in SHIFT else SHIFT[strategy]


def val_loss(step: int, domain_index: int, strategy_shift: float) -> float:
    """The fixture's held-out curve: falling with the step, each domain and strategy offset."""
    return 4.0 - 0.02 * step + 0.1 * domain_index + strategy_shift


# Each held-out metric (eval/metrics.py) of a final model whose bits per byte is v, as lm-eval
# relates them for a fixed 5 bytes per word; a metric not named here scores v itself (any finite
# number serves the tables), so a metric added to eval/metrics.py needs no change here.
METRIC_VALUES = {"bits_per_byte": lambda v: v, "byte_perplexity": lambda v: 2**v,
                 "word_perplexity": lambda v: 2 ** (5 * v)}


def heldout_scores(bits_per_byte: float) -> dict[str, float]:
    """One domain's entry of perplexity.json: every listed held-out metric and the documents scored."""
    return {**{m.name: METRIC_VALUES.get(m.name, lambda v: v)(bits_per_byte) for m in HELDOUT_METRICS},
            "documents": 4}


PARAMS = {"test": 30_000, "tiny": 1_460_000}
RUN_INFO = {"config_hash": "abc123abc123", "git_commit": "0" * 40,
            "versions": {"python": "3.11", "torch": "2.13.0", "transformers": "5.0", "lm_eval": "0.4.13"}}


def fixture_data(data_dir: Path) -> dict[str, str]:
    """The digests of the token files and the tokenizer each run records (models/run_inputs.py):
    the data folder's, where a stand-in of each is written when there is none (one that names no
    domain, so the runs' epochs stay unknown)."""
    if not (data_dir / "tokens" / "meta.json").exists():
        write_json(data_dir / "tokens" / "meta.json", {"domains": {}})
    if not (data_dir / "tokenizer" / "tokenizer.json").exists():
        write_json(data_dir / "tokenizer" / "tokenizer.json",
                   {"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "added_tokens": []})
    return data_inputs(data_dir)


def write_grid(config: dict) -> None:
    """The grid's runs and evaluations, each recording what it was made from as real ones do:
    a run its fingerprint and inputs and its train.log, an evaluation its run's digest."""
    domains = config["corpus"]["domains"]
    data = fixture_data(Path(config["data_dir"]))
    k = len(domains)
    rng = np.random.default_rng(0)
    base = {(size, seed, d): 3.0 - 0.3 * (size == "tiny") + rng.normal(0, 0.05)
            for size in config["grid"]["sizes"] for seed in config["grid"]["seeds"] for d in domains}
    for size in config["grid"]["sizes"]:
        for strategy in config["grid"]["strategies"]:
            for seed in config["grid"]["seeds"]:
                cell = Path(config["runs_dir"]) / size / strategy / f"seed{seed}"
                weights = rng.dirichlet(np.ones(k)) if strategy != "uniform" else np.full(k, 1 / k)
                upstream = {}
                for stage, spec in cell_runs(config, size, strategy).items():  # a shared proxy: written again
                    folder = Path(run_dir(config, spec["size"], strategy, seed, stage))
                    run = Run(strategy=strategy, stage=stage, size=spec["size"], seed=seed)
                    fingerprint = run_fingerprint(config, run)
                    chain = [s for s in cell_runs(config, size, strategy) if s != stage]
                    before = {s: upstream[s] for s in sorted(chain) if s in upstream and not run.stage.same_fan_out(s)}
                    inputs = {"config": fingerprint, **data, "upstream": before}
                    # As models/fit.py records a fit: no steps, its fingerprint in its inputs alone.
                    trains = run.stage.trains
                    recorded = {"steps": spec["steps"] if trains else 0,
                                **({"fingerprint": fingerprint} if trains else {}), "inputs": inputs}
                    write_stage(folder, strategy, stage, spec["size"], seed, domains, weights, rng,
                                shift(config, strategy), lineage=recorded)
                    upstream[stage] = run_digest(folder)
                lineage = {"run": run_digest(cell / "final"), "tokenizer": data["tokenizer"]}
                bpb = {d: base[size, seed, d] + shift(config, strategy) for d in domains}
                write_json(cell / "final" / "eval" / "perplexity.json",
                           {"tasks": {d: heldout_scores(v) for d, v in bpb.items()}, "lineage": lineage})
                tasks = {}
                for d in domains:
                    acc = float(rng.uniform(0.2, 0.4))
                    tasks[f"mixbench_cloze_{d}"] = {"group": "mixbench_cloze", "domain": d, "examples": 10,
                                                    "metrics": {"acc": acc, "acc_stderr": 0.1}}
                    tasks[f"mixbench_choice_{d}"] = {"group": "mixbench_choice", "domain": d, "examples": 10,
                                                     "metrics": {"acc": acc, "acc_stderr": 0.1, "acc_norm": acc + 0.01,
                                                                 "acc_norm_stderr": 0.1}}
                write_json(cell / "final" / "eval" / "downstream.json", {"tasks": tasks, "lineage": lineage})


def write_stage(out: Path, strategy, stage, size, seed, domains, weights, rng, strategy_shift, lineage: dict) -> None:
    k, steps, tokens = len(domains), STEPS, STEPS * 8 * 32
    n = PARAMS[size]
    write_json(out / "weights.json", {"domains": domains, "initial_weights": [1 / k] * k,
                                      "final_weights": weights.tolist()})
    write_json(out / "run.json", {
        "strategy": strategy, "stage": stage, "size": size, **lineage, "parameters": n, "tokens": tokens,
        "train_flops": 6 * n * tokens, "token_passes": {"forward": tokens, "backward": tokens, "reference_forward": 0},
        "flops": 6 * n * tokens * (1.5 if stage == "proxy" else 1), "train_seconds": 10.0, "wall_seconds": 12.0,
        "seed": seed, **RUN_INFO})
    records = []
    # As a real run logs them: every step's sampling weights, and a DoReMi proxy's loss weights
    # α_t / p (uniform sampling p, α_t after the step's update: the trace's alpha).
    sampling, loss_weights = np.tile(weights, (steps, 1)), None
    if strategy == "doremi" and stage == "proxy":
        records = [{"step": s, "alpha": rng.dirichlet(np.ones(k)).tolist(), "excess": (np.arange(k) / s).tolist()}
                   for s in range(1, steps + 1)]
        sampling = np.full((steps, k), 1 / k)
        loss_weights = np.array([r["alpha"] for r in records]) * k
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
        for record in records:  # DoGraph samples with each update's weights from the next step on
            sampling[record["step"]:] = record["alpha"]
    (out / TRAINING_LOG).write_text("the job's own log\n")  # every run's job keeps one, a fit's too
    if Stage.parse(stage).trains:  # a fit trains nothing and, as its job, writes no log.csv
        write_logs(out, domains, sampling, loss_weights, 6 * n * 8 * 32, strategy_shift)
    if records:
        (out / "trace.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def write_logs(out: Path, domains: list[str], sampling: np.ndarray, loss_weights: np.ndarray | None,
               flops_per_step: int, strategy_shift: float) -> None:
    """log.csv with each step's weights (``sampling``: steps × K; ``loss_weights`` the same, or None
    for a stage that does not weight its loss) and val.csv every EVAL_EVERY steps, through the
    loop's own writers."""
    k = len(domains)
    log = StepLog(out / "log.csv", domains, 0, loss_weights=loss_weights is not None)
    val = HeldOutLog(out / "val.csv", domains, 0)
    for step in range(1, STEPS + 1):
        log.write(step, 1e-3, 4.0, step * 8 * 32, step * 0.3, 0.3, 800.0, None, np.full(k, 4.0),
                  np.full(k, 8 * 32 // k), sampling[step - 1], None if loss_weights is None else loss_weights[step - 1])
        if step % EVAL_EVERY == 0:
            val.write(step, step * 8 * 32, step * flops_per_step, step * 0.3, 0.05,
                      np.array([val_loss(step, j, strategy_shift) for j in range(k)]))
    log.close()
    val.close()
