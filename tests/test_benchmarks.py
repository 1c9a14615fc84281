"""The throughput benchmark: its reference step is the loop's computation, and it runs and writes
its measurements (it measures; it never asserts a speed)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
import pytest
import yaml

from conftest import REPO
from mixbench.io import read_json


def test_minimal_step_trains_exactly_as_the_loop_does(built_data, tmp_path):
    """One minimal step and one uniform loop step from the same model on the same batch (two
    micro-batches, clipping, AdamW) give the same weights: the reference is the same computation."""
    from benchmarks.throughput import Setup, Subject, minimal_step
    from corpus.sampler import DomainSampler
    from corpus.tokens import TokenStore
    from models.flat_params import unwrap
    from models.optim import make_optimizer

    store = TokenStore(Path(built_data["data_dir"]) / "tokens", "train", built_data["corpus"]["domains"])
    # 600 ids, padded to 640 (the token files' ids are below 512): the padding's logits must not be scored.
    setup = Setup.of(built_data, "test", vocab_size=600)
    assert setup.training["batch_size"] == 2 * setup.training["micro_batch_size"]
    subject = Subject(built_data, "uniform", "test", setup, tmp_path)
    reference = setup.model()
    assert reference.config.vocab_size == 640
    initial = {name: p.detach().clone() for name, p in reference.named_parameters()}
    optimizer = make_optimizer(unwrap(reference), setup.settings(steps=1))
    for group in optimizer.param_groups:  # the loop's scheduler starts in warmup: the same learning rate
        group["lr"] = subject.loop.scheduler.get_last_lr()[0]
    k = len(store.domains)
    # What the loop's sampler (seed 0) draws for step 1 with the uniform strategy's weights.
    rows = DomainSampler(store, setup.training["seq_len"], seed=0).step_batch(np.full(k, 1 / k),
                                                                               setup.training["batch_size"], step=1)
    micro = list(torch.from_numpy(rows.tokens).split(setup.training["micro_batch_size"]))
    minimal_step(reference, optimizer, micro, 600, bf16=False, grad_clip=setup.training["grad_clip"])
    subject.timed_at(1)
    loops = dict(subject.loop.raw_model.named_parameters())
    for name, mine in reference.named_parameters():
        torch.testing.assert_close(mine, loops[name], rtol=1e-5, atol=1e-7, msg=name)
    assert not torch.equal(initial["transformer.h.0.mlp.c_fc.weight"], loops["transformer.h.0.mlp.c_fc.weight"])


def test_throughput_benchmark_writes_ratios_for_each_strategy(built_data, tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(dict(built_data, results_dir=str(tmp_path / "results"))))
    done = subprocess.run([sys.executable, "-m", "benchmarks.throughput", "--config", str(config_file), "--size", "test",
                           "--steps", "2", "--strategies", "uniform", "doremi", "dograph"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = read_json(tmp_path / "results" / "benchmarks" / "throughput.json")
    assert set(report["strategies"]) == {"uniform", "doremi", "dograph"}
    assert report["strategies"]["doremi"]["stage"] == "proxy"
    # DoGraph's probes are due on 2 of the 30 steps (every 10 after warmup, not the last):
    # timed apart and amortised over the run.
    dograph = report["strategies"]["dograph"]
    groups = {tuple(g["signals"]): g for g in dograph["step_groups"]}
    assert groups[()]["steps_in_run"] == 28 and groups[("example_gradient_features",)]["steps_in_run"] == 2
    expected = (28 * groups[()]["median_step_s"] + 2 * groups[("example_gradient_features",)]["median_step_s"]) / 30
    assert abs(dograph["step_s"] - expected) < 1e-9
    uniform = report["strategies"]["uniform"]
    assert uniform["step_time_vs_uniform"] == 1.0
    assert uniform["tokens_per_s"] == report["batch_size"] * report["seq_len"] / uniform["step_s"]
    assert uniform["mfu"] is None and report["peak_tflops"] is None  # no peak FLOP/s is known for a CPU
    assert uniform["loop_overhead_ratio"] == uniform["step_s"] / report["minimal_step"]["step_s"]
    assert uniform["loop_overhead_target"] == 1.05
    assert uniform["loop_overhead_met"] == (uniform["loop_overhead_ratio"] <= 1.05)
    assert uniform["sampler_sequences_per_s"] > 0
    # The held-out curve: 30 steps measured every 3rd, each measurement timed like a step.
    assert uniform["heldout_measurements"] == 10 and uniform["heldout_s"] > 0
    assert uniform["heldout_fraction"] == pytest.approx(10 * uniform["heldout_s"] / (30 * uniform["step_s"]))
    assert uniform["heldout_met"] == (uniform["heldout_fraction"] <= 0.05) and "held-out curve: 10 measurements" in done.stdout
    assert all(r["peak_memory_bytes"] > 0 for r in report["strategies"].values())
    assert not report["compiled"] and not report["bf16"]  # compile and bf16 are `auto`: CUDA only
    assert "x uniform's step time" in done.stdout and "target <= 1.05" in done.stdout


def test_gpu_check_runs_every_part_on_a_cpu(built_data, tmp_path):
    """scripts/gpu_check.py, which a person with one GPU runs at GPT-2's shapes, on the CPU at the
    test size (--cpu-smoke): every part runs, and its JSON and table have their fields."""
    out = tmp_path / "gpu-check"
    out.mkdir()
    (out / "data").symlink_to(built_data["data_dir"])  # the same corpus and tokenizer: not rebuilt
    # lm-eval's index answers from this file (not indexed again): copa's dataset, not cached here.
    (out / "eval-datasets.json").write_text(json.dumps({"copa": [{"path": "aps/super_glue", "name": "copa", "kwargs": {}}]}))
    done = subprocess.run([sys.executable, "scripts/gpu_check.py", "--cpu-smoke", "--out", str(out)], cwd=REPO,
                          capture_output=True, text=True, timeout=600,
                          env={**os.environ, "HF_DATASETS_CACHE": str(tmp_path / "datasets")})
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((out / "gpu_check.json").read_text())
    bench = report["throughput"]
    assert {name: r["stage"] for name, r in bench["strategies"].items()} == {
        "uniform": "final", "doremi": "proxy", "doge": "proxy", "dograph": "final", "regmix": "swarm-0"}
    for r in bench["strategies"].values():
        assert r["step_time_vs_uniform"] > 0 and r["tokens_per_s"] > 0
    # DoGraph probes every 500 of 20,000 steps (config/paper.yaml): a probe step timed on its own.
    assert [len(g["signals"]) > 0 for g in bench["strategies"]["dograph"]["step_groups"]] == [False, True]
    assert bench["minimal_step"]["tokens_per_s"] > 0 and bench["strategies"]["uniform"]["loop_overhead_ratio"] > 0
    swarm = report["swarm"]
    assert swarm["micro_batch_size"] == 4 and swarm["strategies"]["regmix"]["tokens_per_s"] > 0
    (step,) = report["memory"]
    assert step["size"] == "test" and step["peak_gib"] > 0 and step["estimate_gib"] > 0
    assert report["compile"]["agree"] and len(report["compile"]["compiled"]) == 3
    assert report["evaluation"]["skipped"].startswith("aps/super_glue (copa) is not in the datasets cache")
    table = (out / "gpu_check.md").read_text()
    assert "| uniform tokens/s (test, 8 × 32) |" in table and "| ≥ 400,000 |" in table
    assert "| doge (proxy) step time × uniform |" in table and "| ≤ 1.5× |" in table and "| ≤ 1.4× |" in table
    assert "load_dataset('aps/super_glue', 'copa')" in table and table in done.stdout


def test_the_corpus_benchmark_runs_and_writes_its_measurements(tmp_path):
    """At toy sizes: it builds, cuts the long document at the cap and writes its tables (it
    measures; nothing here asserts a speed). Its tokenization part is left out here (--tokenize-mb
    0): tests/test_corpus_streaming.py compares 1 and 2 workers."""
    subprocess.run([sys.executable, "-m", "benchmarks.corpus_build", "--sizes-gb", "0.002", "--long-document-mb", "0.5",
                    "--tokenize-mb", "0", "--workdir", str(tmp_path / "work"), "--out", str(tmp_path / "out")],
                   cwd=REPO, check=True, capture_output=True, text=True)
    report = read_json(tmp_path / "out" / "corpus_build.json")
    size, long_document = report["build"]
    assert size["documents"] > 100 and 0 < size["peak_rss_mb"] < 1024
    assert long_document["kept_bytes_of_that_domain"] <= 100_000
    assert "| one 0.5 MB document, domain capped at 100 kB |" in (tmp_path / "out" / "corpus_build.md").read_text()


def test_the_fault_injection_script_kills_resumes_and_compares_the_final_model(tmp_path):
    """One kill of DoReMi's 10-step reference (benchmarks/fault_injection.py; the README reports
    a full run: 5 kills of each kind of run)."""
    out = tmp_path / "out"
    subprocess.run([sys.executable, "-m", "benchmarks.fault_injection", "--cases", "reference", "--kills", "1",
                    "--seed", "3", "--workdir", str(tmp_path / "work"), "--out", str(out)],
                   cwd=REPO, check=True, capture_output=True, timeout=600)
    (case,) = read_json(out / "fault_injection.json")["cases"]
    # Trained by hand (python -m models.train), each run still keeps its training log, so the
    # proxy case can read it as its upstream run: one header line per attempt.
    for run, attempts in (("whole", 1), ("killed", 2)):
        log = (tmp_path / "work" / "runs" / "reference" / run / "train.log").read_text()
        assert log.count("=== attempt ") == attempts, log[:500]
    assert case["kills"] == 1 and case["attempts"] == 2 and case["identical"] is True
    killed_at = case["kill_steps"][0]  # checkpoints every 3 steps; a kill at step 3 may cut its checkpoint short
    assert case["resumes"] == (killed_at > 3) or killed_at == 3
    assert "| reference | doremi (reference) | 10 |" in (out / "fault_injection.md").read_text()


def test_the_startup_benchmark_times_every_part_of_a_job_s_start(built_data, tmp_path):
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(built_data))
    done = subprocess.run([sys.executable, "-m", "benchmarks.startup", "--config", str(config_file), "--repeats", "1",
                           "--out", str(tmp_path / "out")], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    report = read_json(tmp_path / "out" / "startup.json")
    parts = {row["part"]: row for row in report["parts"]}
    assert list(parts) == ["python", "import models.train", "import eval.harness.evaluate + lm-eval", "config",
                           "tokens (as built)", "tokens (hashed)"]
    assert all(len(row["runs_s"]) == 1 and row["median_s"] > 0 for row in parts.values())
    # A training job's imports (torch, transformers) cost more than the interpreter alone.
    assert parts["import models.train"]["median_s"] > parts["python"]["median_s"]
    assert f"| tokens (hashed) | {parts['tokens (hashed)']['median_s']:.3f} |" in (tmp_path / "out" / "startup.md").read_text()


def test_strategy_overhead_times_each_strategy_s_host_work_and_refuses_one_that_needs_a_model(built_data, tmp_path):
    from conftest import write_config

    config = dict(built_data, results_dir=str(tmp_path / "results"),
                  strategies={"ado": {"ignore_steps": 5, "start_step": 5, "fit_every": 10, "savgol_window": 7,
                                      "subsample": 1}})
    config_file = write_config(tmp_path / "config.yaml", config)
    done = subprocess.run([sys.executable, "-m", "benchmarks.strategy_overhead", "--config", str(config_file),
                           "--strategies", "odm", "ado", "--steps", "25", "--step-seconds", "0.5"],
                          capture_output=True, text=True, cwd=REPO, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    report = read_json(tmp_path / "results" / "benchmarks" / "strategy_overhead.json")
    assert report["steps"] == 25 and report["step_seconds"]["source"] == "given"
    for name in ("odm", "ado"):
        timing = report["strategies"][name]
        assert 0 < timing["mean_seconds_per_step"] <= timing["max_seconds_in_a_step"] <= timing["total_seconds"]
        assert timing["share_of_a_step"]["at_optimistic_step"] == pytest.approx(timing["mean_seconds_per_step"] / 0.5)
    # ADO's fits (after steps 11 and 21) are its slowest steps: far above its other steps' median.
    assert report["strategies"]["ado"]["max_seconds_in_a_step"] > 5 * report["strategies"]["odm"]["max_seconds_in_a_step"]
    refused = subprocess.run([sys.executable, "-m", "benchmarks.strategy_overhead", "--config", str(config_file),
                              "--strategies", "dograph", "--steps", "5"], capture_output=True, text=True, cwd=REPO,
                             timeout=300)
    assert refused.returncode != 0 and "only a model computes: benchmark it with benchmarks.throughput" in refused.stderr
