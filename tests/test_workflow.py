"""The real Snakemake workflow, end to end, on the fixture corpus in a temporary folder."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest
import yaml

from conftest import REPO, make_test_config, snakemake, write_config

# Two seeds of one size; DoGE and DoGraph run in the paper-grid rehearsal (tests/test_paper_grid.py)
# at two sizes, natural in tests/test_training.py, variants in tests/test_add_strategy.py.
STRATEGIES = ["uniform", "code_heavy", "doremi"]
# Folder names a shell would split, unquote or execute: every job must receive them intact.
DATA, RUNS, RESULTS = "my data 'quoted' $(touch PWNED)", 'runs "x" $(touch PWNED)', "results `touch PWNED`"


@pytest.fixture(scope="module")
def finished_workflow(tmp_path_factory):
    root = tmp_path_factory.mktemp("workflow")
    weights = {"code": 0.5, "books": 0.1, "encyclopedic": 0.1, "docs": 0.1, "man": 0.1, "qa": 0.1}
    config = make_test_config(root, grid={"strategies": STRATEGIES},
                              strategies={"code_heavy": {"strategy": "static", "weights": weights}},
                              data_dir=str(root / DATA), runs_dir=str(root / RUNS), results_dir=str(root / RESULTS))
    config_file = write_config(root / "config.yaml", config)
    result = snakemake(root, config_file)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return root, config_file


def test_workflow_produces_the_tables(finished_workflow):
    root, _ = finished_workflow
    long = pd.read_csv(root / RESULTS / "tables" / "perplexity.csv")
    domains = ["code", "books", "encyclopedic", "docs", "man", "qa"]
    assert len(long) == 1 * len(STRATEGIES) * 2 * len(domains)  # size × strategies × seeds × domains
    assert list(dict.fromkeys(long["strategy"])) == STRATEGIES and set(long["seed"]) == {0, 1}
    assert list(dict.fromkeys(long["domain"])) == domains  # corpus order
    for column in ("bits_per_byte", "perplexity", "config_hash", "git_commit", "torch_version", "lm_eval_version"):
        assert long[column].notna().all(), column
    assert long["bits_per_byte"].between(0.5, 12).all()
    table = (root / RESULTS / "tables" / "perplexity.md").read_text()
    assert "mean ± std over 2 seeds" in table and "| macro avg " in table and "| worst " in table
    for strategy in STRATEGIES:
        assert f"| {strategy} " in table
    # The static strategy trained on its configured mixture.
    log = pd.read_csv(root / RUNS / "test" / "code_heavy" / "seed0" / "final" / "log.csv")
    assert log["weight/code"].eq(0.5).all() and log["weight/qa"].eq(0.1).all()
    # Every run, stages included, has its held-out curve (TensorBoard: tests/test_heldout.py).
    for run in (root / RUNS / "test").glob("*/seed*/*"):
        assert len(pd.read_csv(run / "val.csv")) == 10, run


def test_folder_names_with_spaces_quotes_and_substitutions_reach_every_job_intact(finished_workflow):
    root, _ = finished_workflow
    assert (root / DATA / "tokens" / "meta.json").exists() and (root / RESULTS / "tables" / "perplexity.md").exists()
    assert (root / RUNS / "test" / "doremi" / "seed0" / "final" / "eval" / "downstream.json").exists()
    assert not list(root.rglob("PWNED")) and not (REPO / "PWNED").exists()  # nothing was executed
    assert {p.name for p in root.iterdir()} == {DATA, RUNS, RESULTS, "config.yaml", ".snakemake"}



def test_every_job_has_its_time_and_memory_in_the_jobs_table(finished_workflow):
    root, _ = finished_workflow
    jobs = pd.read_csv(root / RESULTS / "tables" / "jobs.csv").set_index("rule")
    assert jobs["jobs"].to_dict() == {"train": 10, "evaluate": 6, "build_corpus": 1, "train_tokenizer": 1,
                                      "tokenize_corpus": 1, "lm_eval_tasks": 1, "downstream_tasks": 1, "tables": 1,
                                      "figures": 1}
    assert (jobs.wall_total_s > 0).all() and jobs.loc["train", "max_rss_mb"] > 50  # a Python with torch loaded
    assert "| train | 10 |" in (root / RESULTS / "tables" / "jobs.md").read_text()

def test_doremi_runs_reference_proxy_final_and_its_mixture_reaches_the_tables(finished_workflow):
    root, _ = finished_workflow
    cell = root / RUNS / "test" / "doremi" / "seed1"
    assert all((cell / stage / "run.json").exists() for stage in ("reference", "proxy", "final"))
    weights = pd.read_csv(root / RESULTS / "tables" / "weights.csv")
    learned = weights[(weights.strategy == "doremi") & (weights.seed == 1)].set_index("domain")["weight"]
    proxy_average = json.loads((cell / "proxy" / "weights.json").read_text())["final_weights"]
    assert learned.tolist() == pytest.approx(proxy_average)
    assert not learned.round(6).eq(round(1 / 6, 6)).all()  # it moved away from uniform
    static = weights[weights.strategy == "code_heavy"].groupby("domain")["weight"].first()
    assert static["code"] == pytest.approx(0.5)
    trajectories = pd.read_csv(root / RESULTS / "tables" / "trajectories.csv")
    proxy = trajectories[(trajectories.strategy == "doremi") & (trajectories.stage == "proxy")]
    assert sorted(proxy.step.unique()) == list(range(1, 11)) and set(proxy.seed) == {0, 1}
    assert "| doremi " in (root / RESULTS / "tables" / "weights.md").read_text()
    # Logs for every rule, including each training run and each evaluation.
    assert (root / RUNS / "logs" / "train" / "test-doremi-seed1-proxy.log").exists()
    assert (root / RUNS / "logs" / "eval" / "test-code_heavy-seed1.log").exists()
    # A CPU grid expects no GPU (the workflow says so to every job): no job log speaks of one.
    assert not [p for p in (root / RUNS).rglob("*.log") if "GPU(s)" in p.read_text()]  # RUN/train.log too
    # Each run keeps its trainer's output, one header line per attempt; the job's log says where it is.
    training_log = root / RUNS / "test" / "doremi" / "seed1" / "proxy" / "train.log"
    assert training_log.read_text().startswith("=== attempt ")
    assert str(training_log) in (root / RUNS / "logs" / "train" / "test-doremi-seed1-proxy.log").read_text()


def test_a_finished_workflow_has_nothing_left_to_do(finished_workflow):
    root, config_file = finished_workflow
    result = snakemake(root, config_file, "-n")
    assert result.returncode == 0 and "Nothing to be done" in result.stdout + result.stderr


def test_only_result_relevant_changes_rerun_jobs(finished_workflow, tmp_path):
    root, config_file = finished_workflow
    config = yaml.safe_load(config_file.read_text())
    # How the jobs run, not what they compute: threads, checkpoints, processes (the same data for
    # any number: tests/test_ddp.py), the device, compilation, the micro-batch, the time limit,
    # and a stage entry's own resources.
    operational = cfg_with(config, training={"threads": 2, "checkpoint_every": 7, "processes": 2, "nodes": 2,
                                             "device": "cpu", "compile": True, "micro_batch_size": {"test": 2},
                                             "runtime": {"default": 5}},
                           stages={"reference": {"processes": 1, "micro_batch_size": 4, "runtime": 9}},
                           evaluation={"batch_size": 3})
    result = snakemake(root, write_config(tmp_path / "ops.yaml", operational), "-n")
    assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-2000:]
    relevant = cfg_with(config, training={"lr": 1e-3})
    out = snakemake(root, write_config(tmp_path / "lr.yaml", relevant), "-n").stdout
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert jobs.get("train") == "10" and jobs.get("evaluate") == "6", out[-2000:]  # doremi: 3 runs per seed
    assert "downstream_tasks" not in jobs
    assert "build_corpus" not in jobs and "tokenize_corpus" not in jobs


def cfg_with(config: dict, **sections) -> dict:
    from mixbench.config import deep_merge

    return deep_merge(config, sections)


def test_tables_and_figures_are_rebuilt_from_finished_runs_without_retraining(finished_workflow):
    import shutil
    import time

    root, config_file = finished_workflow
    runs_before = {p: p.stat().st_mtime_ns for p in (root / RUNS).rglob("*") if p.is_file() and "logs" not in p.parts}
    shutil.rmtree(root / RESULTS / "tables")
    shutil.rmtree(root / RESULTS / "figures")
    started = time.perf_counter()
    result = snakemake(root, config_file, "figures")  # the README's regeneration target
    seconds = time.perf_counter() - started
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-3000:]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", out, flags=re.M))
    assert jobs == {"tables": "1", "figures": "1", "total": "2"}, out[-2000:]
    assert all(p.stat().st_mtime_ns == t for p, t in runs_before.items())  # no run was touched
    assert (root / RESULTS / "figures" / "bits_per_byte.pdf").stat().st_size > 0
    print(f"tables and figures rebuilt in {seconds:.1f} s")


def test_the_report_holds_every_table_and_figure(finished_workflow):
    root, config_file = finished_workflow
    result = snakemake(root, config_file, "--report", str(root / RESULTS / "report.html"))
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    html = (root / RESULTS / "report.html").read_text(errors="replace")
    from eval.analysis import figure_registry, table_registry
    from strategies import grid_config

    config = grid_config.validate(yaml.safe_load(config_file.read_text()))
    tables, figures = table_registry.table_names(config), figure_registry.figure_names(config)
    for name in [*figures, *tables]:
        assert name in html, name
    # The workflow made exactly the registries' outputs of this grid, each with its caption in the report.
    made = {p.name for p in (root / RESULTS / "tables").iterdir()} - {"jobs.csv", "jobs.md"}
    assert made == {f for name in tables for f in table_registry.table_files(name)}
    assert {p.name for p in (root / RESULTS / "figures").iterdir()} == {
        f"{name}.{fmt}" for name in figures for fmt in figure_registry.FORMATS}
    shown = [name for name in tables if table_registry.REGISTRY[name].views]  # a CSV alone is not in the report
    for registry, names in ((table_registry.REGISTRY, shown), (figure_registry.REGISTRY, figures)):
        for name in names:
            first_words = " ".join(registry[name].caption.split()[:4])
            assert first_words in html or first_words.replace("'", "&#x27;") in html, name


def test_downstream_results_reach_their_tables(finished_workflow):
    root, _ = finished_workflow
    down = pd.read_csv(root / RESULTS / "tables" / "downstream.csv")
    assert set(down.task) == {"mixbench_cloze", "mixbench_choice"}
    assert set(down.metric) == {"acc", "acc_norm"} and set(down[down.task == "mixbench_cloze"].metric) == {"acc"}
    assert len(down[down.metric == "acc"]) == len(STRATEGIES) * 2 * 2 * 6  # strategies × seeds × tasks × domains
    assert down["value"].between(0, 1).all() and down["git_commit"].notna().all()
    assert set(down.domain) == {"code", "books", "encyclopedic", "docs", "man", "qa"}
    comparison = pd.read_csv(root / RESULTS / "tables" / "comparison.csv")
    assert set(comparison.strategy) == set(STRATEGIES) - {"uniform"} and (comparison.baseline == "uniform").all()
    compute = pd.read_csv(root / RESULTS / "tables" / "compute.csv")
    doremi = compute[(compute.strategy == "doremi") & (compute.seed == 0)].set_index("stage")
    # Per token the reference costs 6N; the proxy adds the reference's forward (2N) and, even
    # with the test config's two micro-batches, forwards its own tokens once: 8N.
    assert doremi.loc["proxy", "flops"] / doremi.loc["reference", "flops"] == pytest.approx(8 / 6)


def test_a_bad_config_fails_before_any_job(tmp_path):
    config = make_test_config(tmp_path, grid={"strategies": ["uniform", "natrual"]})
    result = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config))
    assert result.returncode != 0
    assert "unknown strategy 'natrual'; registered strategies: ado, aioli, chameleon, doge, dograph, doremi, lattice, natural, odm, regmix, skillit, static, uniform, unimax" in result.stderr
    assert not (tmp_path / "data").exists()


def test_a_missing_corpus_source_fails_with_its_name(tmp_path):
    config = make_test_config(tmp_path, corpus={"path": str(tmp_path / "nowhere.jsonl")})
    result = snakemake(tmp_path, write_config(tmp_path / "config.yaml", config))
    assert result.returncode != 0
    # Checked before the first job (rules/common.smk, onstart): no job ran.
    assert "mixbench: corpus.path '" in result.stderr and "nowhere.jsonl' matches no file" in result.stderr
    assert not (tmp_path / "runs" / "logs").exists()


def test_two_evaluation_jobs_per_model_would_give_the_same_tables(finished_workflow, tmp_path):
    """Before the one evaluation job per model, each model was evaluated by two processes:
    `eval.harness.run` (perplexity) and `eval.harness.downstream`. Every finished model is evaluated that way
    again here (same arguments as the rule's, in this process to save two start-ups per model),
    and the tables built from those files are byte for byte the workflow's."""
    import shutil

    import torch

    from eval.harness import downstream as eval_downstream
    from eval.harness import run as eval_run
    from eval.analysis.aggregate import aggregate
    from strategies import grid_config

    root, config_file = finished_workflow
    config = grid_config.validate(yaml.safe_load(config_file.read_text()))
    runs = tmp_path / "runs"
    shutil.copytree(root / RUNS, runs, ignore=shutil.ignore_patterns("logs", "checkpoints", "eval"))
    common = ["--tasks-dir", str(root / DATA / "lm_eval_tasks"), "--batch-size", str(config["evaluation"]["batch_size"]),
              "--threads", str(config["training"]["threads"])]
    down = config["downstream"]
    threads = torch.get_num_threads()
    models = sorted(runs.glob("test/*/seed*/final/model"))
    assert len(models) == len(STRATEGIES) * 2
    try:
        for model in models:
            out = model.parent / "eval"
            assert eval_run.main(["--model", str(model), *common, "--out", str(out / "perplexity.json")]) == 0
            assert eval_downstream.main(["--model", str(model), *common, "--tasks", *down["tasks"],
                                         "--num-fewshot", str(down["num_fewshot"]),
                                         *(["--limit", str(down["limit"])] if down["limit"] else []),
                                         "--out", str(out / "downstream.json")]) == 0
    finally:
        torch.set_num_threads(threads)
    aggregate({**config, "runs_dir": str(runs), "results_dir": str(tmp_path / "results")})
    written = sorted(p.name for p in (tmp_path / "results" / "tables").iterdir())
    assert {"perplexity.csv", "perplexity.md", "downstream.csv", "comparison.csv", "compute.csv"} <= set(written)
    # Byte for byte but each evaluation file's sha256 (the tables' `evaluation`): downstream.json
    # records its model's path, which the copy moved.
    def without_digests(path):
        return re.sub(rb"\b[0-9a-f]{64}\b", b"<sha256>", path.read_bytes())

    for name in written:
        assert without_digests(tmp_path / "results" / "tables" / name) == \
            without_digests(root / RESULTS / "tables" / name), name
