"""RegMix through the real Snakemake workflow on the fixture corpus: the swarm fans out into N
training jobs that read none of each other, one fit reads them all, one final model trains on
what it chose; a half-finished swarm resumes with only its missing runs."""

from __future__ import annotations

import json
import re

import pandas as pd
import pytest

from conftest import job_counts, make_test_config, snakemake, write_config

SWARM_RUNS = 5
REGMIX = {"swarm_runs": SWARM_RUNS, "folds": SWARM_RUNS, "candidates": 5000, "top_k": 50,
          "stages": {"swarm": {"size": "test", "steps": 6}}}


def job_blocks(output: str, rule: str) -> list[str]:
    """The text of each planned or run job of ``rule`` (its input, output, reason lines)."""
    return [block for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", output) if f"rule {rule}:" in block]


@pytest.fixture(scope="module")
def regmix_grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("regmix")
    # Downstream tasks and the figures job are covered by tests/test_workflow.py; here the tables
    # (and the fit's figure, drawn in-process below) are the end of the line.
    config = make_test_config(root, grid={"strategies": ["regmix"], "seeds": [0]}, strategies={"regmix": REGMIX},
                              downstream={"tasks": []})
    config_file = write_config(root / "config.yaml", config)
    plan = snakemake(root, config_file, "-n", "tables")
    cell = root / "runs" / "test" / "regmix" / "seed0"
    # Half the swarm, as if the workflow had been stopped: two of the five runs finished.
    first = snakemake(root, config_file, *(str(cell / f"swarm-{r}" / "run.json") for r in (1, 3)))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    finished = {r: (cell / f"swarm-{r}" / "model" / "model.safetensors").stat().st_mtime_ns for r in (1, 3)}
    resumed = snakemake(root, config_file, "tables")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    return {"root": root, "cell": cell, "plan": plan.stdout + plan.stderr, "finished": finished,
            "resumed": resumed.stdout + resumed.stderr, "config": config}


def test_the_swarm_fans_out_into_independent_jobs_then_one_fit_and_one_final(regmix_grid):
    plan = regmix_grid["plan"]
    jobs = job_counts(plan)
    assert jobs["train"] == SWARM_RUNS + 1 and jobs["fit"] == 1 and jobs["evaluate"] == 1
    swarm = [b for b in job_blocks(plan, "train") if "/swarm-" in re.search(r"output: (.*)", b).group(1)]
    assert len(swarm) == SWARM_RUNS
    for block in swarm:  # a swarm run waits for the token files only, not for another run
        inputs = re.search(r"input: (.*)", block).group(1)
        assert "run.json" not in inputs, block
    fit = job_blocks(plan, "fit")[0]
    assert all(f"swarm-{r}/run.json" in fit for r in range(SWARM_RUNS))
    final = [b for b in job_blocks(plan, "train") if "/final/run.json" in re.search(r"output: (.*)", b).group(1)]
    assert len(final) == 1 and "fit/run.json" in final[0]


def test_a_half_finished_swarm_resumes_with_only_its_missing_runs(regmix_grid):
    cell, resumed = regmix_grid["cell"], regmix_grid["resumed"]
    trained = [re.search(r"output: (\S+)", b).group(1) for b in job_blocks(resumed, "train")]
    assert sorted(p.split("/")[-2] for p in trained) == ["final", "swarm-0", "swarm-2", "swarm-4"]
    for r, mtime in regmix_grid["finished"].items():  # the finished runs were not touched
        assert (cell / f"swarm-{r}" / "model" / "model.safetensors").stat().st_mtime_ns == mtime
    # The data the two runs needed is not built again; the evaluation tasks had not been.
    assert job_counts(resumed) == {"train": 4, "fit": 1, "evaluate": 1, "lm_eval_tasks": 1, "tables": 1}


def test_the_final_model_trains_on_the_fit_s_choice_and_every_swarm_run_is_recorded(regmix_grid):
    cell = regmix_grid["cell"]
    fit = json.loads((cell / "fit" / "fit.json").read_text())
    final = json.loads((cell / "final" / "weights.json").read_text())
    assert final["final_weights"] == pytest.approx(fit["chosen"], abs=1e-12)
    assert final["domains"] == fit["domains"]
    for run in fit["runs"]:  # each swarm run's recorded mixture is the one the fit regressed on
        recorded = json.loads((cell / run["stage"] / "weights.json").read_text())["final_weights"]
        assert recorded == pytest.approx(run["weights"], abs=1e-9)
        heldout = pd.read_csv(cell / run["stage"] / "val.csv").iloc[-1]
        assert run["observed"] == pytest.approx(heldout[[f"val_loss/{d}" for d in fit["domains"]]].mean())
    assert -1 <= fit["spearman"] <= 1 and fit["folds"] == SWARM_RUNS


def test_the_tables_count_the_swarm_and_report_the_fit(regmix_grid):
    tables = regmix_grid["root"] / "results" / "tables"
    compute = pd.read_csv(tables / "compute.csv")
    assert sorted(compute["stage"]) == sorted([f"swarm-{r}" for r in range(SWARM_RUNS)] + ["fit", "final"])
    swarm_flops = compute[compute["stage"].str.startswith("swarm-")]["flops"].sum()
    assert swarm_flops > 0 and compute.loc[compute.stage == "fit", "flops"].item() == 0
    lines = (tables / "compute.md").read_text().splitlines()
    header = next(line for line in lines if line.startswith("| size"))
    row = next(line for line in lines if line.startswith("| test ") and "| regmix " in line)
    cells = dict(zip([c.strip() for c in header.split("|")], [c.strip() for c in row.split("|")]))
    assert cells["swarm FLOPs"] == f"{swarm_flops:.3g}" and cells["fit FLOPs"] == "0"  # one column: all its runs
    # The final model's curve starts after the whole swarm; a swarm run after none of its siblings.
    curves = pd.read_csv(tables / "curves.csv").groupby("stage")["upstream_flops"].unique()
    assert curves["final"].tolist() == [swarm_flops] and curves["swarm-3"].tolist() == [0]
    fits = pd.read_csv(tables / "fits.csv")
    assert len(fits) == 1 and fits["swarm_runs"].item() == SWARM_RUNS and fits["target"].item() == "macro"
    assert len(pd.read_csv(tables / "swarm.csv")) == SWARM_RUNS
    assert "Spearman ρ (k-fold)" in (tables / "fits.md").read_text()
    # The fit job's time and memory, for the jobs table (eval/jobs.py reads one folder per rule).
    assert (regmix_grid["root"] / "runs" / "logs" / "benchmarks" / "fit" / "test-regmix-seed0.tsv").exists()


def test_the_fit_s_figure_is_drawn_from_the_tables(regmix_grid):
    from eval.figures import Figures, save
    from mixbench import config as cfg

    figures = Figures(cfg.validate(regmix_grid["config"]))
    fig = figures.regmix_fit()
    left, right = fig.axes
    assert len(left.collections) == 1 and len(left.collections[0].get_offsets()) == SWARM_RUNS  # one point per run
    assert "ρ = " in left.get_legend().get_texts()[0].get_text()
    assert [t.get_text() for t in right.get_xticklabels()] == regmix_grid["config"]["corpus"]["domains"]
    paths = save(fig, regmix_grid["root"] / "results" / "figures", "regmix_fit")
    assert all(path.stat().st_size > 10_000 for path in paths)
