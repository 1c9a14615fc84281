"""GPUs of its own for every job on one machine (mixbench.gpus), on a pool of fake devices:
the allocator only sets CUDA_VISIBLE_DEVICES and holds lock files, so no GPU is needed."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import REPO, SNAKEMAKE, make_test_config, write_config

# A job that records the devices it was given and when it ran.
PROBE = ("import json, os, sys, time; out = sys.argv[1]; "
         "open(out + '.start', 'w').write(json.dumps([os.environ.get('CUDA_VISIBLE_DEVICES'), time.time()])); "
         "time.sleep(float(sys.argv[2])); open(out + '.end', 'w').write(str(time.time()))")


def allocator_env(tmp_path: Path, **extra: str | None) -> dict[str, str]:
    """Four fake GPUs and a lock folder of the test's own; ``extra`` adds variables (None: unsets)."""
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES" and not k.startswith("SLURM_")}
    env = {**env, "MIXBENCH_GPUS": "0,1,2,3", "MIXBENCH_GPU_LOCK_DIR": str(tmp_path / "locks"),
           "PYTHONPATH": str(REPO), **extra}
    return {k: v for k, v in env.items() if v is not None}


class Job:
    def __init__(self, tmp_path: Path, name: str, gpus: int, seconds: float, **env: str):
        self.out = tmp_path / name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mixbench.gpus", "run", "--gpus", str(gpus), "--",
             sys.executable, "-c", PROBE, str(self.out), str(seconds)],
            env=allocator_env(tmp_path, **env), stderr=subprocess.PIPE, text=True)

    def wait_started(self, timeout: float = 20) -> None:
        deadline = time.time() + timeout
        while not self.out.with_suffix(".start").exists():
            assert time.time() < deadline and self.proc.poll() is None, "the job did not start"
            time.sleep(0.05)

    def finish(self) -> str:
        _, stderr = self.proc.communicate(timeout=60)
        return stderr

    @property
    def gpus(self) -> list[str]:
        return json.loads(self.out.with_suffix(".start").read_text())[0].split(",")

    @property
    def started(self) -> float:
        return json.loads(self.out.with_suffix(".start").read_text())[1]

    @property
    def ended(self) -> float:
        return float(self.out.with_suffix(".end").read_text())


def test_four_concurrent_one_gpu_jobs_get_four_different_gpus_at_the_same_time(tmp_path):
    jobs = [Job(tmp_path, f"job{i}", gpus=1, seconds=2) for i in range(4)]
    logs = [job.finish() for job in jobs]
    assert all(job.proc.returncode == 0 for job in jobs), logs
    assert sorted(g for job in jobs for g in job.gpus) == ["0", "1", "2", "3"]
    assert max(job.started for job in jobs) < min(job.ended for job in jobs)  # all four ran at once
    assert all(re.search(r"CUDA_VISIBLE_DEVICES=\d \(1 of the 4 GPU\(s\) of this machine\)", log) for log in logs), logs


def test_a_job_waits_while_too_few_gpus_are_free_and_a_multi_gpu_job_gets_disjoint_ones(tmp_path):
    pairs = [Job(tmp_path, "a", gpus=2, seconds=1.5), Job(tmp_path, "b", gpus=2, seconds=3)]
    for job in pairs:
        job.wait_started()
    late = Job(tmp_path, "late", gpus=1, seconds=0)
    logs = [job.finish() for job in [*pairs, late]]
    a, b = pairs
    assert len(set(a.gpus)) == 2 and sorted(a.gpus + b.gpus) == ["0", "1", "2", "3"], logs
    # Every device was busy: the late job waited for the first pair to end and got one of its devices.
    assert re.search(r"waiting for 1 free GPU\(s\) of 4; busy: 0 \(pid \d+\), 1 \(pid \d+\), 2 \(pid \d+\), "
                     r"3 \(pid \d+\)", logs[2]), logs[2]
    assert a.ended <= late.started < b.ended and late.gpus[0] in a.gpus


def test_the_gpus_of_a_killed_job_are_free_again(tmp_path):
    victim = Job(tmp_path, "victim", gpus=3, seconds=120)
    victim.wait_started()
    waiting = Job(tmp_path, "waiting", gpus=4, seconds=0)
    time.sleep(1)
    assert waiting.proc.poll() is None and not waiting.out.with_suffix(".start").exists()
    victim.proc.send_signal(signal.SIGKILL)  # no handler, no cleanup: only the kernel frees the locks
    victim.proc.wait()
    log = waiting.finish()
    assert waiting.proc.returncode == 0 and sorted(waiting.gpus) == ["0", "1", "2", "3"], log
    assert "waiting for 4 free GPU(s) of 4" in log and "got GPU(s) 0,1,2,3 after" in log


def test_a_request_larger_than_the_pool_is_an_error_at_once(tmp_path):
    job = Job(tmp_path, "big", gpus=5, seconds=0)
    log = job.finish()
    assert job.proc.returncode == 2 and not job.out.with_suffix(".start").exists()
    assert "error: a job asks for 5 GPU(s) but this machine has 4 (0,1,2,3); lower training.processes" in log


def test_without_gpus_or_asking_none_no_gpu_is_taken(tmp_path):
    none = Job(tmp_path, "none", gpus=1, seconds=0, MIXBENCH_GPUS="", MIXBENCH_EXPECT_GPU=None)
    assert "asks for 1 GPU(s) and this machine has none: it runs without" in none.finish()  # a hand run: said
    assert json.loads(none.out.with_suffix(".start").read_text())[0] is None  # CUDA_VISIBLE_DEVICES untouched
    # A job of a CPU grid (the workflow sets MIXBENCH_EXPECT_GPU=none) says nothing about GPUs.
    quiet = Job(tmp_path, "quiet", gpus=1, seconds=0, MIXBENCH_GPUS="", MIXBENCH_EXPECT_GPU="none")
    log = quiet.finish()
    assert quiet.proc.returncode == 0 and quiet.out.with_suffix(".start").exists() and "GPU" not in log, log
    cpu = Job(tmp_path, "cpu", gpus=0, seconds=0)
    cpu.finish()
    assert cpu.gpus == [""]  # hidden: a job that reserved no GPU cannot use one by accident
    assert not (tmp_path / "locks").exists()  # neither took a lock


def test_jobs_sharing_a_slurm_allocation_split_its_gpus_and_another_allocation_has_its_own(tmp_path):
    # Two allocations on one node, each seeing its GPUs as 0.. (cgroups), with no MIXBENCH_GPUS.
    shared = [Job(tmp_path, f"shared{i}", gpus=1, seconds=2, SLURM_JOB_ID="77", CUDA_VISIBLE_DEVICES="0,1",
                  MIXBENCH_GPUS=None) for i in range(2)]
    for job in shared:
        job.wait_started()
    alone = Job(tmp_path, "alone", gpus=1, seconds=0, SLURM_JOB_ID="78", CUDA_VISIBLE_DEVICES="0", MIXBENCH_GPUS=None)
    logs = [job.finish() for job in [*shared, alone]]
    assert sorted(shared[0].gpus + shared[1].gpus) == ["0", "1"], logs
    assert alone.gpus == ["0"] and alone.started < min(job.ended for job in shared), logs  # no wait for job 77
    assert "(1 of the 2 GPU(s) of SLURM job 77)" in logs[0] and "waiting" not in logs[2]
    # An allocation without CUDA_VISIBLE_DEVICES has no GPU, whatever the node's nvidia-smi lists:
    # a job that asked SLURM for GPUs and got none fails before it starts, never trains on the CPU.
    fake_smi = tmp_path / "bin" / "nvidia-smi"
    fake_smi.parent.mkdir()
    fake_smi.write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\n")
    fake_smi.chmod(0o755)
    gpu_job = Job(tmp_path, "gpu_job", gpus=1, seconds=0, SLURM_JOB_ID="79", MIXBENCH_GPUS=None,
                  PATH=f"{fake_smi.parent}:/usr/bin:/bin")
    log = gpu_job.finish()
    assert gpu_job.proc.returncode == 2 and not gpu_job.out.with_suffix(".start").exists(), log
    assert "asks for 1 GPU(s) and SLURM job 79 has none (CUDA_VISIBLE_DEVICES is unset): give train" in log
    # ... unless running GPU jobs on CPU nodes is what the user said (the fake-SLURM tests do).
    cpu_job = Job(tmp_path, "cpu_job", gpus=1, seconds=0, SLURM_JOB_ID="80", MIXBENCH_GPUS=None,
                  MIXBENCH_EXPECT_GPU="none", PATH=f"{fake_smi.parent}:/usr/bin:/bin")
    log = cpu_job.finish()
    assert cpu_job.proc.returncode == 0 and cpu_job.out.with_suffix(".start").exists() and "GPU" not in log, log


def test_count_reads_the_override_the_parent_devices_or_nvidia_smi(tmp_path):
    def count(**env):
        return subprocess.run([sys.executable, "-m", "mixbench.gpus", "count"], env=env, capture_output=True,
                              text=True, check=True).stdout.strip()

    base = {"PYTHONPATH": str(REPO), "PATH": f"{tmp_path}:/usr/bin:/bin"}
    (tmp_path / "nvidia-smi").write_text("#!/bin/sh\necho 'GPU 0: NVIDIA H200 (UUID: GPU-a)'\n"
                                         "echo 'GPU 1: NVIDIA H200 (UUID: GPU-b)'\n")
    (tmp_path / "nvidia-smi").chmod(0o755)
    assert count(**base) == "2"
    assert count(**base, CUDA_VISIBLE_DEVICES="3") == "1"
    assert count(**base, CUDA_VISIBLE_DEVICES="3", MIXBENCH_GPUS="0,1,2") == "3"


def gpu_profile_dry_run(tmp_path: Path, training: dict) -> subprocess.CompletedProcess:
    """`snakemake --profile profiles/gpu -n -p` of one run, from the repository root as the
    profile says, with two GPUs in the pool."""
    config = make_test_config(tmp_path, grid={"strategies": ["uniform"], "seeds": [0]}, training=training)
    return subprocess.run(
        [*SNAKEMAKE, "--profile", "profiles/gpu", "--directory", str(tmp_path), "--configfiles",
         str(write_config(tmp_path / "config.yaml", config)), "-n", "-p"],
        cwd=REPO, env={**allocator_env(tmp_path), "MIXBENCH_GPUS": "0,1"}, capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("device, processes, train_gpus, eval_gpus", [("auto", 2, 2, 1), ("cpu", 3, 0, 0)])
def test_the_gpu_profile_limits_jobs_to_the_machines_gpus_and_rules_ask_for_what_the_config_needs(
        tmp_path, device, processes, train_gpus, eval_gpus):
    result = gpu_profile_dry_run(tmp_path, {"processes": processes, "device": device, "batch_size": 36,
                                            "micro_batch_size": 6})
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = re.findall(r"^rule (\w+):.*?resources: ([^\n]*)", out, flags=re.M | re.S)
    gpus = {rule: re.search(r"\bgpu=(\d+)", resources) for rule, resources in jobs}
    # The scheduler's share and the allocator's request are the run's GPUs (none on device cpu,
    # whatever the processes).
    assert int(gpus["train"][1]) == train_gpus and int(gpus["evaluate"][1]) == eval_gpus, jobs
    assert f"mixbench.gpus run --gpus {train_gpus} --" in out and f"mixbench.gpus run --gpus {eval_gpus} --" in out


def test_the_gpu_profile_refuses_a_run_that_asks_for_more_gpus_than_the_machine_has(tmp_path):
    # Refused at the start, not when that run's turn comes after the others.
    result = gpu_profile_dry_run(tmp_path, {"processes": {"default": 1, "test": 3}, "batch_size": 18,
                                            "micro_batch_size": 6})
    assert result.returncode == 1
    assert ("mixbench: uniform's final at size 'test' asks for 3 GPUs (processes: training.processes.test) and the "
            "GPU pool has 2") in result.stderr, result.stderr[-3000:]
