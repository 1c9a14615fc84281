"""The workflow on SLURM through the real executor plugin (profiles/slurm), with a stand-in
SLURM on PATH (tests/fake_slurm.py) that runs every job here, and a run on two "nodes" started
by srun and joined by torchrun's c10d rendezvous, on CPU with gloo."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import fake_slurm
from conftest import REPO, make_test_config, snakemake, write_config

PY = sys.executable
RUN = "runs/test/uniform/seed0/final"


def submitted(state, rule: str) -> list[str]:
    """The sbatch command line of ``rule``'s job, less the parts that vary per run (job name, log
    file, working directory, the wrapped command)."""
    def comment(argv):
        return argv[argv.index("--comment") + 1]

    lines = [argv for argv in fake_slurm.recorded(state, "sbatch")
             if comment(argv) == f"rule_{rule}" or comment(argv).startswith(f"rule_{rule}_wildcards_")]
    assert len(lines) == 1, lines
    argv, kept = lines[0], []
    skip = {"--job-name", "--output", "--comment", "-D"}
    for i, arg in enumerate(argv):
        if arg in skip or argv[i - 1] in skip or arg.startswith("--wrap="):
            continue
        kept.append(arg)
    return kept


def run_on_fake_slurm(root: Path, built_data: dict, target: str, **training) -> Path:
    """The workflow through the real SLURM executor plugin and profiles/slurm, in ``root``, for
    ``target`` (relative to ``root``), on the test config with ``training`` overrides and no
    downstream tasks."""
    # The corpus, tokenizer and tokens of the session: every SLURM job costs two Snakemake starts
    # (~7 s here), so only the jobs the tests are about are submitted.
    for built in ("corpus", "tokenizer", "tokens"):
        shutil.copytree(Path(built_data["data_dir"]) / built, root / "data" / built)
    config = make_test_config(root, grid={"strategies": ["uniform"], "seeds": [0]}, training=training,
                              downstream={"tasks": []})
    fake_slurm.install(root / "bin", root / "state")
    result = snakemake(
        root, write_config(root / "config.yaml", config), "--profile", str(REPO / "profiles" / "slurm"),
        # The plugin waits 40 s before its first status check by default.
        "--slurm-init-seconds-before-status-checks", "1", "--slurm-logdir", str(root / "slurm_logs"),
        "--slurm-keep-successful-logs", str(root / target),
        env={"PATH": f"{root / 'bin'}:/usr/bin:/bin", "LOGLEVEL": "INFO"})  # INFO: torchrun's agents log their ranks
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "state"


@pytest.fixture(scope="module")
def slurm_workflow(tmp_path_factory, built_data):
    # Two DDP processes per run; device auto asks for GPUs (there are none: the jobs train on CPU).
    root = tmp_path_factory.mktemp("slurm")
    run_on_fake_slurm(root, built_data, f"{RUN}/eval/perplexity.json", processes=2, batch_size=12, micro_batch_size=6)
    return root


def test_every_job_is_submitted_with_the_plugins_own_resources(slurm_workflow):
    state = slurm_workflow / "state"
    # CPU jobs: the CPU partition, one task.
    assert submitted(state, "lm_eval_tasks") == [
        "sbatch", "--parsable", "--export=ALL", "-p", "cpu", "-t", "120", "--mem", "16000", "--ntasks=1",
        "--cpus-per-task=1"]
    # Training: the GPU partition, one GPU per DDP process, a CPU per process (training.threads 1).
    assert submitted(state, "train") == [
        "sbatch", "--parsable", "--export=ALL", "-p", "gpu", "-t", "2880", "--mem", "64000", "--cpus-per-task=2",
        "--gpus=2"]
    assert submitted(state, "evaluate") == [
        "sbatch", "--parsable", "--export=ALL", "-p", "gpu", "-t", "120", "--mem", "16000", "--cpus-per-task=1",
        "--gpus=1"]
    assert len(fake_slurm.recorded(state, "sbatch")) == 3  # every job went through sbatch


def test_training_runs_torchrun_inside_the_allocation(slurm_workflow):
    root = slurm_workflow
    # The jobstep plugin starts the job as one srun step holding the allocation's GPUs...
    step = next(argv for argv in fake_slurm.recorded(root / "state", "srun") if "train" in argv)
    assert step[1:step.index(PY)] == ["-n1", "--cpu-bind=q", "--cpus-per-task=2", "--gpus=2", "--nodes=1"]
    # ...where the rule's launcher runs torchrun with one process per GPU and leaves the devices to SLURM.
    log = (root / "runs" / "logs" / "train" / "test-uniform-seed0-final.log").read_text()
    assert re.search(r"mixbench.gpus: the job asks for 2 GPU\(s\) and SLURM job \d+ has none: it runs without", log)
    assert f"mixbench.launch: {PY} -m torch.distributed.run --standalone --nproc_per_node 2 -m models.train" in log
    assert json.loads((root / RUN / "run.json").read_text())["tokens"] == 30 * 12 * 32
    assert json.loads((root / RUN / "eval" / "perplexity.json").read_text())


def test_two_nodes_train_one_run_through_srun_and_the_c10d_rendezvous(built_data, tmp_path):
    state = run_on_fake_slurm(tmp_path, built_data, f"{RUN}/run.json", nodes=2, processes=1, steps=10)
    # Two nodes, one task on each, GPUs counted per node; the plugin's `mpi` path (no srun step
    # of its own around the job) leaves the step to the launcher.
    assert submitted(state, "train") == [
        "sbatch", "--parsable", "--export=ALL", "-p", "gpu", "-t", "2880", "--mem", "64000", "--nodes=2",
        "--ntasks=2", "--cpus-per-task=1", "--gres=gpu:1"]
    config = next((tmp_path / "runs" / "configs").glob("*.yaml"))
    train = ["-m", "models.train", "--config", str(config), "--size", "test", "--strategy", "uniform", "--seed", "0",
             "--stage", "final", "--out", str(tmp_path / RUN)]
    assert fake_slurm.recorded(state, "srun") == [[
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--kill-on-bad-exit=1",
        "--gpus-per-node=1", PY, "-m", "mixbench.launch", "--slurm-node", "--nodes", "2", "--processes", "1", "--",
        *train]]
    # Each node's task joins torchrun's rendezvous on the first node, on a port of the job's own...
    log = (tmp_path / "runs" / "logs" / "train" / "test-uniform-seed0-final.log").read_text()
    job_id = str(fake_slurm.FIRST_JOB_ID)  # the only job
    rendezvous = (f"mixbench.launch: {PY} -m torch.distributed.run --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d "
                  f"--rdzv_endpoint localhost:{29500 + int(job_id) % 3000} --rdzv_id {job_id} {' '.join(train)}")
    assert log.count(rendezvous) == 2, log[-4000:]
    # ...where the two agents became group ranks 0 and 1 of one world of 2 and trained one run.
    assert "group_rank=0" in log and "group_rank=1" in log and log.count("global_world_sizes=[2]") == 2, log[-4000:]
    assert json.loads((tmp_path / RUN / "run.json").read_text())["tokens"] == 10 * 8 * 32  # the global batch, once


def test_several_nodes_outside_slurm_are_refused_before_any_compute(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    launch = [PY, "-m", "mixbench.launch", "--nodes", "2", "--processes", "4", "--", "-m", "models.train"]
    result = subprocess.run(launch, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: training.nodes is 2: a run on several nodes starts only inside a SLURM allocation of 2 nodes "
        "(snakemake --profile profiles/slurm), and SLURM_JOB_ID is not set")


def test_the_schema_takes_nodes_and_the_batch_must_split_over_every_rank(tmp_path):
    from mixbench import config as cfg
    from mixbench.errors import ConfigError

    base = make_test_config(tmp_path, training={"nodes": 2, "processes": 2, "batch_size": 16, "micro_batch_size": 4})
    assert cfg.validate(yaml.safe_load(yaml.safe_dump(base)))["training"]["nodes"] == 2
    with pytest.raises(ConfigError, match=r"batch_size 24 is not a multiple of nodes × processes × micro_batch_size"
                                          r".* = 2 × 2 × 4"):
        cfg.validate(make_test_config(tmp_path, training={"nodes": 2, "processes": 2, "batch_size": 24,
                                                          "micro_batch_size": 4}))
