"""CPU jobs run with tcmalloc (mixbench/allocator.py): freed large blocks are reused without the
kernel mapping and zeroing fresh pages, the heap does not grow, and training is bit-identical."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from mixbench.allocator import LIBRARY, cpu_job_env, find_tcmalloc
from mixbench.errors import ConfigError

# The default grid's logits (16 x 128 tokens over 8,192) and their log-softmax, 64 MiB each,
# allocated and freed 30 times as steps do. Prints the page faults and the RSS growth (MiB) of
# the last 20, after the first 10 have warmed the allocator up.
STEPS = """
import json, resource, torch
def rss(): return int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize() / 2**20
for step in range(30):
    if step == 10:
        faults, start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, rss()
    logits = torch.empty(16 * 128 * 8192).fill_(1.0)
    scores = logits.log_softmax(-1)
    del logits, scores
print(json.dumps([resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults, rss() - start]))
"""


def launched(command: list[str], **env: str) -> subprocess.CompletedProcess:
    """``command`` started as the workflow starts training and evaluation: through mixbench.gpus."""
    base = {k: v for k, v in os.environ.items()
            if k not in ("LD_PRELOAD", "MIXBENCH_ALLOCATOR", "GLIBC_TUNABLES") and not k.startswith("MALLOC_")}
    return subprocess.run([sys.executable, "-m", "mixbench.gpus", "run", "--gpus", "0", "--", *command], cwd=REPO,
                          env={**base, "PYTHONPATH": str(REPO), **env}, capture_output=True, text=True, check=True)


def test_tcmalloc_is_installed():
    # scripts/mixbench.sh installs it (libtcmalloc-minimal4); without it CPU jobs are slower.
    assert find_tcmalloc() is not None, f"{LIBRARY} not found: apt-get install libtcmalloc-minimal4"


def test_a_cpu_job_reuses_freed_blocks_without_faulting_pages_in_again():
    system = launched([sys.executable, "-c", STEPS], MIXBENCH_ALLOCATOR="system")
    assert "allocator: glibc malloc (MIXBENCH_ALLOCATOR=system)" in system.stderr
    glibc_faults, _ = json.loads(system.stdout)
    tcmalloc = launched([sys.executable, "-c", STEPS])
    assert f"allocator: tcmalloc ({find_tcmalloc()})" in tcmalloc.stderr
    faults, growth = json.loads(tcmalloc.stdout)
    # glibc maps two fresh 64 MiB blocks every step and faults all their pages in (with 4 KiB
    # pages 655,360 faults in 20 steps; fewer where huge pages back them); tcmalloc writes the
    # same pages again: measured, one block's worth at most once in those 20 steps.
    assert faults * 10 <= glibc_faults, (faults, glibc_faults)
    assert growth < 8, growth  # MiB: the process is no larger than after the tenth step


def test_the_allocator_choice_is_left_to_a_user_who_made_one(monkeypatch):
    env, line = cpu_job_env({"LD_PRELOAD": "/opt/libjemalloc.so.2"})
    assert env["LD_PRELOAD"] == "/opt/libjemalloc.so.2" and "already preloaded" in line
    # Another library is kept after tcmalloc, even one whose folder names an allocator.
    env, line = cpu_job_env({"LD_PRELOAD": "/home/jemalloc-fan/libother.so"})
    assert env["LD_PRELOAD"] == f"{find_tcmalloc()}:/home/jemalloc-fan/libother.so"
    with pytest.raises(ConfigError, match="MIXBENCH_ALLOCATOR='glibc': expected one of tcmalloc, system"):
        cpu_job_env({"MIXBENCH_ALLOCATOR": "glibc"})
    monkeypatch.setattr("mixbench.allocator.find_tcmalloc", lambda: Path("/my libs/libtcmalloc_minimal.so.4"))
    env, line = cpu_job_env({})
    assert "LD_PRELOAD" not in env and "cannot be preloaded (LD_PRELOAD cannot hold a space or colon)" in line
    monkeypatch.setattr("mixbench.allocator.find_tcmalloc", lambda: None)
    env, line = cpu_job_env({})
    assert "LD_PRELOAD" not in env and "apt-get install libtcmalloc-minimal4" in line


def test_training_is_bit_identical_under_either_allocator(built_data, tmp_path):
    from conftest import write_config

    config_file = write_config(tmp_path / "config.yaml", {**built_data, "training": {
        **built_data["training"], "steps": 12, "checkpoint_every": 100}})
    models = {}
    for allocator, env in (("glibc malloc", {"MIXBENCH_ALLOCATOR": "system"}), ("tcmalloc (", {})):
        out = tmp_path / allocator.split()[0]
        done = launched([sys.executable, "-m", "models.train", "--config", str(config_file), "--size", "test",
                         "--strategy", "uniform", "--seed", "0", "--out", str(out)], **env)
        assert f"allocator: {allocator}" in done.stderr
        models[allocator] = (out / "model" / "model.safetensors").read_bytes()
    assert models["glibc malloc"] == models["tcmalloc ("]
