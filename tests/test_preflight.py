"""The preflight (models/preflight.py): evaluation datasets in the offline cache, a GPU for a
GPU run, disk for the grid; each failure one line with its fix, all of them together, and the
workflow refusing to start any job while one remains."""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
from pathlib import Path

import pytest

from conftest import REPO, make_test_config, snakemake, write_config
from strategies import grid_config
from mixbench import eval_datasets, footprint, gpu_checks
from models import preflight
from mixbench.eval_datasets import DatasetSpec
from mixbench.errors import ConfigError, TrainingError
from mixbench.model_sizes import SIZES, approx_parameters

LM_EVAL = importlib.metadata.version("lm_eval")
PIQA = DatasetSpec("baber/piqa")
WINOGRANDE = DatasetSpec("allenai/winogrande", "winogrande_xl")


def fake_cached(cache: Path, spec: DatasetSpec) -> None:
    """What `load_dataset` leaves in the datasets cache: {ns}___{name}/{config}/{version}/{hash}/."""
    namespace, name = spec.path.split("/")
    config = spec.name or "default"
    entry = cache / f"{namespace}___{name}" / config / "0.0.0" / "0123abcd"
    entry.mkdir(parents=True)
    (entry / "dataset_info.json").write_text(json.dumps({"config_name": config}))


def test_a_dataset_is_found_only_where_datasets_looks_for_it_offline(tmp_path):
    cache = tmp_path / "datasets"
    assert "Couldn't find cache for baber/piqa" in eval_datasets.cache_problem(PIQA, cache)
    fake_cached(cache, PIQA)
    assert eval_datasets.cache_problem(PIQA, cache) is None
    # Another configuration of the same dataset does not stand in for the one the task names.
    fake_cached(cache, DatasetSpec("allenai/winogrande", "winogrande_debiased"))
    assert "for config 'winogrande_xl'" in eval_datasets.cache_problem(WINOGRANDE, cache)
    # The hub's file cache alone does not load offline (datasets 5 reads its Arrow cache only).
    hub = tmp_path / "hub" / "datasets--Rowan--hellaswag" / "snapshots" / "abc"
    hub.mkdir(parents=True)
    assert eval_datasets.cache_problem(DatasetSpec("Rowan/hellaswag"), cache) is not None
    assert PIQA.load_call() == "datasets.load_dataset('baber/piqa')"
    assert WINOGRANDE.load_call() == "datasets.load_dataset('allenai/winogrande', 'winogrande_xl')"


def test_the_download_mode_loads_each_dataset_once_as_the_evaluation_will(monkeypatch):
    """What --download runs on a machine with network (none here: load_dataset is a stand-in)."""
    import datasets

    loaded = []
    monkeypatch.setattr(datasets, "load_dataset", lambda path, name, **kwargs: loaded.append((path, name, kwargs)))
    eval_datasets.download([PIQA, WINOGRANDE, PIQA, DatasetSpec(None)])
    assert loaded == [("baber/piqa", None, {}), ("allenai/winogrande", "winogrande_xl", {})]


def test_task_datasets_come_from_lm_evals_index_with_groups_expanded(tmp_path):
    """A task, a group and a tag of a small task index (lm-eval parses the YAMLs; no data loads)."""
    (tmp_path / "tasks").mkdir()
    for name, path, config in (("t_one", "org/one", None), ("t_two", "org/two", "cfg")):
        lines = [f"task: {name}", f"dataset_path: {path}", "tag: t_tag", "output_type: multiple_choice",
                 "doc_to_text: q", "doc_to_target: 0", "doc_to_choice: [a, b]", "test_split: test"]
        (tmp_path / "tasks" / f"{name}.yaml").write_text("\n".join(lines + ([f"dataset_name: {config}"] if config else [])))
    (tmp_path / "tasks" / "group.yaml").write_text("group: t_group\ntask: [t_one, t_two]\n")
    cache_file = tmp_path / "specs.json"
    specs = eval_datasets.task_datasets(["t_one", "t_group", "t_tag"], cache_file=cache_file,
                                        include_path=str(tmp_path / "tasks"), include_defaults=False)
    two = [DatasetSpec("org/one"), DatasetSpec("org/two", "cfg")]
    assert specs == {"t_one": [two[0]], "t_group": two, "t_tag": two}
    # Kept per lm-eval version: asked again, the file answers without indexing anything.
    assert eval_datasets.task_datasets(["t_group"], cache_file=cache_file, include_path="/nonexistent",
                                       include_defaults=False) == {"t_group": two}


def registry_config(tmp_path: Path, **overrides) -> list[str]:
    """The test config with lm-eval registry tasks whose datasets the specs file names."""
    config = make_test_config(tmp_path, downstream={"tasks": ["piqa", "winogrande", "mixbench_cloze"]}, **overrides)
    specs = tmp_path / "data" / "lm_eval_tasks" / f"lm_eval-{LM_EVAL}-datasets.json"
    specs.parent.mkdir(parents=True)
    specs.write_text(json.dumps({"piqa": [{"path": PIQA.path, "name": None, "kwargs": {}}],
                                 "winogrande": [{"path": WINOGRANDE.path, "name": WINOGRANDE.name, "kwargs": {}}]}))
    return [str(write_config(tmp_path / "config.yaml", config))]


def test_every_missing_dataset_is_one_line_with_its_download_command(tmp_path):
    files = registry_config(tmp_path)
    cache = tmp_path / "datasets"
    lines, problems = preflight.preflight(files, datasets_cache=cache)
    assert len(problems) == 2 and all(p.startswith("datasets: task ") and "\n" not in p for p in problems)
    assert "baber/piqa" in problems[0] and "python -c \"import datasets; datasets.load_dataset('baber/piqa')\"" in problems[0]
    assert "load_dataset('allenai/winogrande', 'winogrande_xl')" in problems[1]
    assert f"python -m models.preflight --config {files[0]} --download" in problems[1]
    fake_cached(cache, PIQA)
    fake_cached(cache, WINOGRANDE)
    lines, problems = preflight.preflight(files, datasets_cache=cache)
    assert problems == [] and "2 registry task(s), 2 dataset(s)" in lines[0] and lines[0].endswith("all cached")


def test_the_command_prints_every_check_and_exits_2_on_a_problem(tmp_path, monkeypatch, capsys):
    for name in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE", "HF_DATASETS_CACHE"):
        monkeypatch.delenv(name, raising=False)  # the command sets the first two: restored after the test
    ok = str(write_config(tmp_path / "ok.yaml", make_test_config(tmp_path)))
    preflight.main(["--config", ok])
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "datasets: none needed (generated downstream tasks only)" and out[-1] == "preflight: ok"
    assert out[1] == "GPU: not checked (--expect-gpu none)" and out[2].startswith(f"disk for {tmp_path}/data")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "datasets"))
    with pytest.raises(SystemExit) as exit:
        preflight.main(["--config", *registry_config(tmp_path / "registry")])
    assert exit.value.code == 2 and os.environ["HF_DATASETS_OFFLINE"] == "1"  # what evaluation sees
    assert "error: preflight: 2 problem(s)" in capsys.readouterr().err


def fake_nvidia_smi(folder: Path, gpus: int) -> dict:
    """A PATH whose nvidia-smi lists ``gpus`` GPUs, and no device variables."""
    folder.mkdir(exist_ok=True)
    listing = "".join(f"echo 'GPU {i}: NVIDIA H100 80GB HBM3 (UUID: GPU-{i})'\n" for i in range(gpus))
    (folder / "nvidia-smi").write_text(f"#!/bin/sh\n{listing}")
    (folder / "nvidia-smi").chmod(0o755)
    env = {k: v for k, v in os.environ.items() if k not in ("MIXBENCH_GPUS", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID")}
    return {**env, "PATH": f"{folder}:/usr/bin:/bin"}


CPU_BUILD = gpu_checks.TorchFacts("2.13.0+cpu", None, False)
OLD_DRIVER = gpu_checks.TorchFacts("2.13.0+cu130", "13.0", False)
WORKING = gpu_checks.TorchFacts("2.13.0+cu128", "12.8", True)


@pytest.mark.parametrize("facts, gpus, expected", [
    (CPU_BUILD, 2, ["CPU-only build"]),
    (OLD_DRIVER, 2, ["nvidia-smi lists 2 GPU(s), but torch 2.13.0+cu130 (built for CUDA 13.0) cannot use any"]),
    (WORKING, 0, ["no GPU for jobs on this machine"]),
    (CPU_BUILD, 0, ["CPU-only build", "no GPU for jobs on this machine"]),
    (WORKING, 4, []),
])
def test_a_gpu_run_without_a_usable_gpu_is_refused(tmp_path, monkeypatch, facts, gpus, expected):
    for name, value in fake_nvidia_smi(tmp_path / "bin", gpus).items():
        monkeypatch.setenv(name, value)
    for name in ("MIXBENCH_GPUS", "CUDA_VISIBLE_DEVICES", "SLURM_JOB_ID"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(gpu_checks.TorchFacts, "here", classmethod(lambda cls: facts))
    lines, problems = preflight.gpu_checks("machine", "auto")
    assert len(problems) == len(expected) and all(e in p for e, p in zip(expected, problems))
    assert all(p.startswith("GPU: ") and "\n" not in p for p in problems)
    assert all("pip install --force-reinstall 'torch==2.13.0' --index-url" in p for p in problems if "torch" in p)
    assert f"{gpus} GPU(s) for jobs" in lines[0]
    # On a SLURM submit host (`build`) only the torch build can be judged: the GPUs are on the nodes.
    assert len(preflight.gpu_checks("build", "auto")[1]) == (facts is CPU_BUILD)


def test_which_gpus_the_workflow_expects():
    config = {"training": {"device": "auto"}}
    assert preflight.expected_gpu_level(config, None) == "none"  # the default grid on a laptop
    assert preflight.expected_gpu_level(config, "machine") == "machine"
    assert preflight.expected_gpu_level({"training": {"device": "cuda"}}, None) == "machine"
    assert preflight.expected_gpu_level({"training": {"device": "cpu"}}, "machine") == "none"
    with pytest.raises(ConfigError, match="one of none, build, machine; got 'gpu'"):
        preflight.expected_gpu_level(config, "gpu")


def test_a_job_given_gpus_refuses_to_train_on_the_cpu(tmp_path, monkeypatch):
    """mixbench.gpus tells the job its devices; models/device.py then refuses a torch that cannot use them."""
    from mixbench import gpus

    started = {}
    monkeypatch.setattr(os, "execvpe", lambda file, args, env: (started.clear(), started.update(env)))
    gpus.run(1, ["train"], env={"MIXBENCH_GPUS": "0,1", "MIXBENCH_GPU_LOCK_DIR": str(tmp_path / "locks")})
    assert started["MIXBENCH_JOB_GPUS"] == started["CUDA_VISIBLE_DEVICES"] == "0"
    # A grid that expects no GPU (the workflow says so on a CPU laptop) lets its jobs use what they find.
    gpus.run(1, ["train"], env={"MIXBENCH_GPUS": "0,1", "MIXBENCH_GPU_LOCK_DIR": str(tmp_path / "locks-none"),
                                "MIXBENCH_EXPECT_GPU": "none"})
    assert "MIXBENCH_JOB_GPUS" not in started and started["CUDA_VISIBLE_DEVICES"] == "0"
    gpus.run(0, ["train"], env={"MIXBENCH_JOB_GPUS": "0", "MIXBENCH_GPUS": "0,1"})
    assert "MIXBENCH_JOB_GPUS" not in started and started["CUDA_VISIBLE_DEVICES"] == ""  # none given, none claimed
    from models.device import init_distributed

    monkeypatch.setenv("MIXBENCH_JOB_GPUS", "0")
    monkeypatch.setattr(gpu_checks.TorchFacts, "here", classmethod(lambda cls: OLD_DRIVER))
    with pytest.raises(TrainingError, match="given GPU.s. 0 .* training on the CPU instead is refused: GPU: "):
        init_distributed("auto")
    monkeypatch.setattr(gpu_checks.TorchFacts, "here", classmethod(lambda cls: CPU_BUILD))
    with pytest.raises(TrainingError, match="CPU-only build"):
        init_distributed("auto")
    assert init_distributed("cpu")[2].type == "cpu"  # a run on the CPU by choice goes on
    monkeypatch.delenv("MIXBENCH_JOB_GPUS")
    assert init_distributed("auto")[2].type == "cpu"  # no GPU given, none expected: the default grid


def test_the_disk_estimate_of_the_paper_grid_by_part(tmp_path):
    config = grid_config.load(REPO / "config" / "paper.yaml", overrides={
        "data_dir": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results")})
    parts = {p.name: p for p in footprint.estimate(config, preflight.footprint_runs(config), parallel_runs=2)}
    caps = 49_600_000_000  # the seven caps of config/paper.yaml
    assert parts["corpus"].bytes == pytest.approx(1.1 * caps)
    assert parts["token files"].bytes == pytest.approx(caps / 3 * 2)  # GPT-2's ids fit 2 bytes
    # The two largest runs in progress: large final models, 3 checkpoints of 12 bytes per parameter.
    assert parts["checkpoints"].bytes == 2 * 3 * 12 * approx_parameters(SIZES["large"], 50304)
    # 126 final models, and per seed DoReMi's reference and proxy, DoGE's and Chameleon's proxies;
    # no swarm model (RegMix's 512 runs and Skill-It's 7 per seed).
    assert "138 saved models" in parts["models"].detail and parts["swarm runs"].bytes == 0
    assert "1557 runs, 0 of them" in parts["swarm runs"].detail
    lines, problems = footprint.shortfalls(list(parts.values()), free=lambda path: 100 * 10**9)
    assert len(lines) == 1 and "corpus 54.6 GB" in lines[0] and "100.0 GB free" in lines[0]
    (problem,) = problems
    assert problem.startswith(f"disk: {tmp_path}/data, {tmp_path}/runs, {tmp_path}/results needs about ")
    assert "but its filesystem has 100.0 GB free" in problem
    assert footprint.shortfalls(list(parts.values()), free=lambda path: 10**13)[1] == []


def test_what_is_already_written_counts_against_the_estimate(tmp_path):
    parts = [footprint.Part("corpus", str(tmp_path / "data"), 5000, "test")]
    assert footprint.shortfalls(parts, free=lambda path: 4000)[1]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "corpus.jsonl").write_bytes(b"x" * 2000)
    assert footprint.shortfalls(parts, free=lambda path: 4000)[1] == []


def test_the_workflow_starts_no_job_until_the_preflight_passes(tmp_path):
    """Uncached registry tasks and GPUs expected (`--resources gpu=N`, as profiles/gpu sets it) on
    a machine without any and a CPU-only torch: Snakemake runs the preflight before its first
    job, lists the four problems and stops."""
    files = registry_config(tmp_path, grid={"seeds": [0], "strategies": ["uniform"]})
    names = tmp_path / "data" / "lm_eval_tasks" / f"lm_eval-{LM_EVAL}-tasks.json"
    names.write_text(json.dumps(["piqa", "winogrande"]))  # lm-eval's registry names, as the workflow caches them
    done = snakemake(tmp_path, Path(files[0]), "--resources", "gpu=2",
                     env={"HF_DATASETS_CACHE": str(tmp_path / "datasets"), "MIXBENCH_GPUS": ""})
    assert done.returncode != 0
    assert "the preflight found 4 problem(s); nothing trains until they are fixed" in done.stderr
    assert "load_dataset('baber/piqa')" in done.stderr and "load_dataset('allenai/winogrande'" in done.stderr
    assert "- GPU: torch" in done.stderr and "- GPU: no GPU for jobs on this machine" in done.stderr
    assert not (tmp_path / "data" / "corpus").exists() and not (tmp_path / "runs" / "test").exists()


NEW_MODULES = ["eval_datasets", "footprint", "gpu_checks", "model_sizes"]


@pytest.mark.parametrize("module", NEW_MODULES)
def test_the_preflight_imports_nothing_from_the_layers_above(module):
    tree = ast.parse((REPO / "mixbench" / f"{module}.py").read_text())
    imported = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    imported += [alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names]
    assert not [m for m in imported if m and m.split(".")[0] in ("corpus", "models", "strategies", "eval")]
