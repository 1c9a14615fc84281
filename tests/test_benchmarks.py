"""The throughput benchmark runs and writes its ratios (it measures; it never asserts a speed)."""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import REPO
from mixbench.io import read_json


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
    assert report["strategies"]["uniform"]["step_time_vs_uniform"] == 1.0
    for key in ("loop_overhead_ratio", "sampler_sequences_per_s", "minimal_step_s"):
        assert report["strategies"]["uniform"][key] > 0
    assert "x uniform" in done.stdout
