"""The workflow on SLURM through the real executor plugin (profiles/slurm), with a stand-in
SLURM on PATH (tests/fake_slurm.py) that runs every job here, and a run on two "nodes" started
by srun and joined by torchrun's c10d rendezvous, on CPU with gloo."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import fake_slurm
from strategies import runs as strategy_runs
from strategies import grid_config
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


def run_on_fake_slurm(root: Path, built_data: dict, target: str, grid_strategies=("uniform",),
                      strategies: dict | None = None, **training) -> Path:
    """The workflow through the real SLURM executor plugin and profiles/slurm, in ``root``, for
    ``target`` (relative to ``root``), on the test config with ``grid_strategies``, ``strategies``
    entries and ``training`` overrides and no downstream tasks."""
    # The corpus, tokenizer and tokens of the session: every SLURM job costs two Snakemake starts
    # (~7 s here), so only the jobs the tests are about are submitted.
    for built in ("corpus", "tokenizer", "tokens"):
        shutil.copytree(Path(built_data["data_dir"]) / built, root / "data" / built)
    config = make_test_config(root, grid={"strategies": list(grid_strategies), "seeds": [0]}, training=training,
                              strategies=strategies or {}, downstream={"tasks": []})
    fake_slurm.install(root / "bin", root / "state")
    result = snakemake(
        root, write_config(root / "config.yaml", config), "--profile", str(REPO / "profiles" / "slurm"),
        # The plugin waits 40 s before its first status check by default.
        "--slurm-init-seconds-before-status-checks", "1", "--slurm-logdir", str(root / "slurm_logs"),
        "--slurm-keep-successful-logs", str(root / target),
        # One core here: what a job asks SLURM for is more than the submitting machine's cores.
        "--cores", "1",
        # INFO: torchrun's agents log their ranks. No GPU is expected: the "GPU" jobs train on this CPU.
        env={"PATH": f"{root / 'bin'}:/usr/bin:/bin", "LOGLEVEL": "INFO", "MIXBENCH_EXPECT_GPU": "none"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root / "state"


@pytest.fixture(scope="module")
def slurm_workflow(tmp_path_factory, built_data):
    # Two DDP processes per run of size `test` (keyed by size), one thread each; device auto asks
    # for GPUs (there are none: the jobs train on CPU). The time limit of the size's key, over
    # the default.
    root = tmp_path_factory.mktemp("slurm")
    run_on_fake_slurm(root, built_data, f"{RUN}/eval/perplexity.json", processes={"default": 1, "test": 2},
                      runtime={"default": 999, "test": 45}, batch_size=12, micro_batch_size=6)
    return root


def test_every_job_is_submitted_with_the_plugins_own_resources(slurm_workflow):
    state = slurm_workflow / "state"
    # CPU jobs: the CPU partition, one task.
    assert submitted(state, "lm_eval_tasks") == [
        "sbatch", "--parsable", "--export=ALL", "-p", "cpu", "-t", "120", "--mem", "16000", "--ntasks=1",
        "--cpus-per-task=1"]
    # Training: the GPU partition, the config's time limit, one GPU per DDP process, threads ×
    # processes CPUs (not capped at the submitting machine's --cores 1).
    assert submitted(state, "train") == [
        "sbatch", "--parsable", "--export=ALL", "-p", "gpu", "-t", "45", "--mem", "64000", "--nodes=1",
        "--cpus-per-task=2", "--gpus=2"]
    assert submitted(state, "evaluate") == [
        "sbatch", "--parsable", "--export=ALL", "-p", "gpu", "-t", "120", "--mem", "16000", "--cpus-per-task=1",
        "--gpus=1"]
    assert len(fake_slurm.recorded(state, "sbatch")) == 3  # every job went through sbatch


def test_training_runs_torchrun_inside_the_allocation(slurm_workflow):
    root = slurm_workflow
    # The jobstep plugin starts the job as one srun step holding the allocation's GPUs and CPUs...
    step = next(argv for argv in fake_slurm.recorded(root / "state", "srun") if "train" in argv)
    assert step[1:step.index(PY)] == ["-n1", "--cpu-bind=q", "--cpus-per-task=2", "--gpus=2", "--nodes=1"]
    # ...where the rule's launcher runs torchrun with one process per GPU and leaves the devices to SLURM.
    # The job's log names the run's own training log, which holds what the launcher printed.
    assert str(root / RUN / "train.log") in (root / "runs" / "logs" / "train" / "test-uniform-seed0-final.log").read_text()
    log = (root / RUN / "train.log").read_text()
    assert "mixbench.gpus: the job asks for" not in log  # GPU jobs on CPU nodes on purpose: not a word per job
    assert f"mixbench.launch: {PY} -m torch.distributed.run --standalone --nproc_per_node 2 -m models.train" in log
    assert json.loads((root / RUN / "run.json").read_text())["tokens"] == 30 * 12 * 32
    assert json.loads((root / RUN / "eval" / "perplexity.json").read_text())


def test_two_nodes_train_one_run_through_srun_and_the_c10d_rendezvous(built_data, tmp_path):
    # DoReMi's reference alone, on two nodes and with a time limit of its own from its stage
    # entry, over training's one node and default limit; 2 threads a process, more CPUs per node
    # than the submitting machine's --cores 1.
    reference = "runs/test/doremi/seed0/reference"
    state = run_on_fake_slurm(tmp_path, built_data, f"{reference}/run.json", grid_strategies=["doremi"],
                              strategies={"doremi": {"stages": {"reference": {"nodes": 2, "runtime": 30}}}},
                              processes=1, threads=2)
    # Two nodes, one task on each, GPUs counted per node; the plugin's `mpi` path (no srun step
    # of its own around the job) leaves the step to the launcher.
    assert submitted(state, "train") == [
        "sbatch", "--parsable", "--export=ALL", "-p", "gpu", "-t", "30", "--mem", "64000", "--nodes=2",
        "--ntasks=2", "--cpus-per-task=2", "--gres=gpu:1"]
    config = next((tmp_path / "runs" / "configs").glob("*.yaml"))
    train = ["-m", "models.train", "--config", str(config), "--size", "test", "--strategy", "doremi", "--seed", "0",
             "--stage", "reference", "--out", str(tmp_path / reference)]
    srun = fake_slurm.recorded(state, "srun")
    assert srun == [[
        "srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=2", "--kill-on-bad-exit=1",
        "--gpus-per-node=1", PY, "-m", "mixbench.launch", "--slurm-node", "--nodes", "2", "--processes", "1", "--",
        *train]]
    # The CPUs the step asks for are the allocation's, per node.
    sbatch = fake_slurm.recorded(state, "sbatch")[0]
    assert fake_slurm.option(srun[0], "--cpus-per-task") == fake_slurm.option(sbatch, "--cpus-per-task") == "2"
    # Each node's task joins torchrun's rendezvous on the first node, on a port of the job's own...
    log = (tmp_path / reference / "train.log").read_text()
    job_id = str(fake_slurm.FIRST_JOB_ID)  # the only job
    rendezvous = (f"mixbench.launch: {PY} -m torch.distributed.run --nnodes 2 --nproc_per_node 1 --rdzv_backend c10d "
                  f"--rdzv_endpoint localhost:{29500 + int(job_id) % 3000} --rdzv_id {job_id} {' '.join(train)}")
    assert log.count(rendezvous) == 2, log[-4000:]
    # ...where the two agents became group ranks 0 and 1 of one world of 2 and trained one run.
    assert "group_rank=0" in log and "group_rank=1" in log and log.count("global_world_sizes=[2]") == 2, log[-4000:]
    assert json.loads((tmp_path / reference / "run.json").read_text())["tokens"] == 10 * 8 * 32  # the global batch


def test_several_nodes_outside_slurm_are_refused_before_any_compute(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    launch = [PY, "-m", "mixbench.launch", "--nodes", "2", "--processes", "4", "--", "-m", "models.train"]
    result = subprocess.run(launch, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert result.stderr.startswith(
        "error: training.nodes is 2: a run on several nodes starts only inside a SLURM allocation of 2 nodes "
        "(snakemake --profile profiles/slurm), and SLURM_JOB_ID is not set")


def test_the_schema_takes_nodes_and_the_batch_must_split_over_every_rank(tmp_path):
    from mixbench.errors import ConfigError

    base = make_test_config(tmp_path, training={"nodes": 2, "processes": 2, "batch_size": 16, "micro_batch_size": 4})
    assert grid_config.validate(yaml.safe_load(yaml.safe_dump(base)))["training"]["nodes"] == 2
    with pytest.raises(ConfigError, match=r"batch_size 24 is not a multiple of nodes × processes × micro_batch_size"
                                          r".* = 2 × 2 × 4"):
        grid_config.validate(make_test_config(tmp_path, training={"nodes": 2, "processes": 2, "batch_size": 24,
                                                          "micro_batch_size": 4}))


def test_a_runs_resources_come_from_its_stage_entry_then_its_size_then_the_default(tmp_path):
    from mixbench import config as cfg
    from mixbench.errors import ConfigError

    resources = dict(training={"processes": {"default": 4, "test": 2}, "runtime": {"default": 100, "tiny": 50},
                               "batch_size": 16, "micro_batch_size": 2},
                     stages={"proxy": {"processes": 1, "micro_batch_size": 4}},
                     strategies={"doremi": {"stages": {"proxy": {"runtime": 7}}}})
    plain = make_test_config(tmp_path, grid={"sizes": ["test", "tiny"], "strategies": ["uniform", "doremi"]},
                             training={"batch_size": 16})
    config = grid_config.validate(cfg.deep_merge(plain, resources))

    def run(name, stage, size):
        found = cfg.run_resources(config, name, stage, size)
        return found.processes, found.micro_batch_size, found.runtime, found.cpus

    assert run("uniform", "final", "tiny") == (4, 2, 50, 4)  # default processes, tiny's runtime
    assert run("uniform", "final", "test") == (2, 2, 100, 2)  # test's processes, default runtime
    assert run("doremi", "reference", "test") == (2, 2, 100, 2)
    assert run("doremi", "proxy", "test") == (1, 4, 7, 1)  # the global stage entry, then the strategy's own
    assert [cfg.resource_setting(config, "doremi", "proxy", "test", field)[1] for field in cfg.RESOURCE_FIELDS] == [
        "stages.proxy.processes", "training.nodes", "stages.proxy.micro_batch_size",
        "strategies.doremi.stages.proxy.runtime"]
    # Where a run computes, not what: no run's fingerprint changes.
    before = grid_config.validate(plain)
    for name, stage, size in [("doremi", "proxy", "test"), ("uniform", "final", "tiny")]:
        chain = strategy_runs.run_chain(config, name, stage, size)
        assert strategy_runs.run_fingerprint(config, name, chain) == strategy_runs.run_fingerprint(before, name, chain)
    # A stage's own micro-batch must split the batch too; the problem names the fields that set it.
    with pytest.raises(ConfigError, match=r"batch_size 16 is not a multiple of nodes × processes × micro_batch_size "
                                          r"at size 'test' = 1 × 1 × 3 \(training.nodes, stages.proxy.processes, "
                                          r"strategies.doremi.stages.proxy.micro_batch_size\), "
                                          r"for strategies.doremi's proxy"):
        grid_config.validate(cfg.deep_merge(plain, {**resources, "strategies": {
            "doremi": {"stages": {"proxy": {"micro_batch_size": 3}}}}}))
    with pytest.raises(ConfigError, match=r"training.processes: names no processes for size 'tiny' and has no "
                                          r"`default`"):
        grid_config.validate(cfg.deep_merge(plain, {"training": {"processes": {"test": 1}}}))


README = REPO / "docs" / "gpus-and-clusters.md"


def readme_two_node_example() -> str:
    """The two-node config file as docs/gpus-and-clusters.md shows it (section "SLURM")."""
    match = re.search(r"```yaml\n(# two-nodes\.yaml\n.*?)```", README.read_text(), flags=re.S)
    assert match, "docs/gpus-and-clusters.md has no ```yaml block that starts with '# two-nodes.yaml'"
    return match.group(1)


class PluginResources(dict):
    __getattr__ = dict.__getitem__  # the plugin reads both job.resources.get("x") and job.resources.x


def sbatch_options(resources: dict) -> list[str]:
    """The sbatch options the real SLURM plugin builds for a job with these Snakemake resources,
    less the ones that name the job and its log."""
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string

    job = type("Job", (), {"resources": PluginResources(resources), "threads": 1})()
    params = {"run_uuid": "ID", "slurm_logfile": "LOG", "comment_str": "rule_train", "account": "",
              "partition": "-p gpu", "workdir": None}
    line = shlex.split(get_submit_command(job, params) + set_gres_string(job))
    named = {"--job-name", "--output", "--comment"}
    return [arg for i, arg in enumerate(line) if arg not in named and line[i - 1] not in named]


def test_the_readmes_two_node_example_validates_and_asks_for_each_runs_own_resources(tmp_path, monkeypatch):
    from mixbench import config as cfg
    from mixbench.launch import TORCHRUN, job_resources, rendezvous_command, srun_command

    example = tmp_path / "two-nodes.yaml"
    example.write_text(readme_two_node_example())
    config = grid_config.load(REPO / "config" / "paper.yaml", example)  # every run's batch splits over its ranks
    runs = {"swarm": ("regmix", "swarm-7", "regmix-1m"), "doremi proxy": ("doremi", "proxy", "small"),
            "small": ("natural", "final", "small"), "large": ("doge", "final", "large")}
    resources = {run: cfg.run_resources(config, *where) for run, where in runs.items()}
    sbatch = {run: sbatch_options(job_resources(found)) for run, found in resources.items()}
    head = ["sbatch", "--parsable", "--export=ALL", "-p", "gpu"]
    # RegMix's swarm on one GPU of one node within its stage's hour; small as config/paper.yaml has it...
    assert sbatch["swarm"] == [*head, "-t", "60", "--nodes=1", "--cpus-per-task=8", "--gpus=1"]
    assert sbatch["doremi proxy"] == sbatch["small"] == [*head, "-t", "600", "--nodes=1", "--cpus-per-task=8",
                                                         "--gpus=1"]
    # ...and large on two nodes of 4 GPUs, 8 threads per process.
    assert sbatch["large"] == [*head, "-t", "300", "--nodes=2", "--ntasks=2", "--cpus-per-task=32", "--gres=gpu:4"]
    # The launcher's step asks for the same CPUs per node, and each node's torchrun joins the rendezvous.
    large, train = resources["large"], ["-m", "models.train", "--size", "large"]
    step = srun_command(large.nodes, large.processes, large.cpus, large.gpus, train, env={"SLURM_JOB_ID": "1007"})
    assert step[:7] == ["srun", "--nodes=2", "--ntasks=2", "--ntasks-per-node=1", "--cpus-per-task=32",
                        "--kill-on-bad-exit=1", "--gpus-per-node=4"]
    assert fake_slurm.option(step, "--cpus-per-task") == fake_slurm.option(sbatch["large"], "--cpus-per-task")
    fake_slurm.install(tmp_path / "bin", tmp_path / "state")  # scontrol
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ['PATH']}")
    agent = rendezvous_command(large.nodes, large.processes, train,
                               env={"SLURM_JOB_ID": "1007", "SLURM_STEP_NODELIST": "gpu-a,gpu-b"})
    assert agent == [*TORCHRUN, "--nnodes", "2", "--nproc_per_node", "4", "--rdzv_backend", "c10d",
                     "--rdzv_endpoint", "gpu-a:30507", "--rdzv_id", "1007", *train]
