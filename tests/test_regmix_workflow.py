"""RegMix through the real Snakemake workflow on the fixture corpus: the swarm fans out into N
training runs that read none of each other, one job per run or, with `pack`, one job per pack of
runs trained in one process; one fit reads them all, one final model trains on what it chose; a
half-finished swarm resumes with only its missing runs, and packed runs equal runs of their own
to the last bit."""

from __future__ import annotations

import csv
import json
import re

import pandas as pd
import pytest
import torch

from conftest import job_counts, make_test_config, snakemake, write_config
from mixbench import config as cfg
from strategies import grid_config

SWARM_RUNS, PACK = 5, 2  # packs swarm-0 swarm-1, swarm-2 swarm-3, swarm-4
REGMIX = {"swarm_runs": SWARM_RUNS, "folds": SWARM_RUNS, "candidates": 5000, "top_k": 50,
          "stages": {"swarm": {"size": "test", "steps": 6, "pack": PACK}}}
# One job per run, each saving its model (neither enters a run's fingerprint).
UNPACKED = {"strategies": {"regmix": {"stages": {"swarm": {"pack": 1, "save_model": True}}}}}
LOG_TIMING, VAL_TIMING = ("elapsed_s", "step_s", "tokens_per_s", "mfu"), ("elapsed_s", "eval_s")


def job_blocks(output: str, rule: str) -> list[str]:
    """The text of each planned or run job of ``rule`` (its input, output, reason lines)."""
    return [block for block in re.split(r"\n(?=\[[^\]]+\]\n(?:local)?rule )", output) if f"rule {rule}:" in block]


@pytest.fixture(scope="module")
def regmix_grid(tmp_path_factory):
    root = tmp_path_factory.mktemp("regmix")
    # Downstream tasks and the figures job are covered by tests/test_workflow.py; here the tables
    # (and the fit's figure, drawn in-process below) are the end of the line.
    # Dropout: a packed run that inherited its predecessor's random state would differ.
    config = make_test_config(root, grid={"strategies": ["regmix"], "seeds": [0]}, strategies={"regmix": REGMIX},
                              downstream={"tasks": []}, training={"dropout": 0.1})
    config_file = write_config(root / "config.yaml", config)
    unpacked_file = write_config(root / "unpacked.yaml", cfg.deep_merge(config, UNPACKED))
    cell = root / "runs" / "test" / "regmix" / "seed0"
    # The grid and its tables: `tables` alone would only tabulate what is finished (rules/results.smk),
    # so the final model's evaluation is named beside it.
    grid = [str(cell / "final" / "eval" / "perplexity.json"), "tables"]
    unpacked_plan = snakemake(root, unpacked_file, "-n", *grid)
    # Half the swarm, as if the workflow had been stopped: two of the five runs finished, each in
    # a job of its own; the packed workflow then finds them finished in their packs.
    first = snakemake(root, unpacked_file, *(str(cell / f"swarm-{r}" / "run.json") for r in (1, 3)))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    finished = {r: (cell / f"swarm-{r}" / "model" / "model.safetensors").stat().st_mtime_ns for r in (1, 3)}
    resumed = snakemake(root, config_file, *grid)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    unpacked_again = snakemake(root, unpacked_file, "-n", *grid)  # the finished grid, pack 1 again
    return {"root": root, "cell": cell, "finished": finished, "unpacked_plan": unpacked_plan.stdout + unpacked_plan.stderr,
            "unpacked_again": unpacked_again.stdout + unpacked_again.stderr,
            "resumed": resumed.stdout + resumed.stderr, "config": config}


def outputs(blocks: list[str]) -> list[str]:
    return [re.search(r"output: (\S+)", block).group(1) for block in blocks]


def test_the_swarm_fans_out_into_independent_jobs_then_one_fit_and_one_final(regmix_grid):
    plan = regmix_grid["unpacked_plan"]
    jobs = job_counts(plan)
    assert jobs["train"] == SWARM_RUNS + 1 and jobs["fit"] == 1 and jobs["evaluate"] == 1
    swarm = [b for b in job_blocks(plan, "train") if "/swarm-" in re.search(r"output: (.*)", b).group(1)]
    assert len(swarm) == SWARM_RUNS
    for block in swarm:  # a swarm run waits for the token files only, not for another run
        inputs = re.search(r"input: (.*)", block).group(1)
        assert "run.json" not in inputs, block
    finished = job_blocks(plan, "swarm_finished")[0]  # what the fit waits for
    assert all(f"swarm-{r}/run.json" in finished for r in range(SWARM_RUNS))
    fit = job_blocks(plan, "fit")[0]
    assert f"{regmix_grid['cell']}/packs/swarm.json" in fit and "swarm-0/run.json" not in fit
    final = [b for b in job_blocks(plan, "train") if "/final/run.json" in re.search(r"output: (.*)", b).group(1)]
    assert len(final) == 1 and "fit/run.json" in final[0]


def test_a_packed_swarm_is_one_job_per_pack_and_the_runs_after_it_wait_for_the_packs(regmix_grid):
    plan = regmix_grid["resumed"]  # every pack had a run to train
    jobs = job_counts(plan)
    assert jobs["train_pack"] == 3 and jobs["train"] == 1 and jobs["fit"] == 1  # 5 runs in packs of 2, the final
    packs = job_blocks(plan, "train_pack")
    markers = [f"{regmix_grid['cell']}/packs/swarm-{first}-{last}.json" for first, last in ((0, 1), (2, 3), (4, 4))]
    assert sorted(outputs(packs)) == markers
    assert all("run.json" not in re.search(r"input: (.*)", block).group(1) for block in packs)
    assert all(marker in job_blocks(plan, "swarm_finished")[0] for marker in markers)
    fit = job_blocks(plan, "fit")[0]
    assert f"{regmix_grid['cell']}/packs/swarm.json" in fit and not any(marker in fit for marker in markers)


def test_changing_pack_retrains_nothing(regmix_grid):
    # The swarm's marker is written again for its new files; the fit and the final model ignore its age.
    assert job_counts(regmix_grid["unpacked_again"]) == {"swarm_finished": 1, "tables": 1}


def test_a_half_finished_swarm_resumes_with_only_its_missing_runs(regmix_grid):
    cell, resumed = regmix_grid["cell"], regmix_grid["resumed"]
    assert outputs(job_blocks(resumed, "train")) == [f"{cell}/final/run.json"]
    manifests = {p.stem: json.loads(p.read_text()) for p in (cell / "packs").glob("swarm-*.json")}
    assert {name: (m["trained"], m["skipped"]) for name, m in manifests.items()} == {
        "swarm-0-1": (["swarm-0"], ["swarm-1"]), "swarm-2-3": (["swarm-2"], ["swarm-3"]), "swarm-4-4": (["swarm-4"], [])}
    for r, mtime in regmix_grid["finished"].items():  # the finished runs were not touched
        assert (cell / f"swarm-{r}" / "model" / "model.safetensors").stat().st_mtime_ns == mtime
    # A swarm run writes no model unless its stage entry asks; the final model does.
    assert not any((cell / f"swarm-{r}" / "model").exists() for r in (0, 2, 4))
    assert (cell / "final" / "model" / "model.safetensors").exists()
    # The data the two runs needed is not built again; the evaluation tasks had not been.
    assert job_counts(resumed) == {"train_pack": 3, "swarm_finished": 1, "train": 1, "fit": 1, "evaluate": 1,
                                   "lm_eval_tasks": 1, "tables": 1}


def without_timing(path, timing_columns: tuple[str, ...]) -> list[list[str]]:
    rows = list(csv.reader(open(path)))
    keep = [i for i, name in enumerate(rows[0]) if name not in timing_columns]
    return [[row[i] for i in keep] for row in rows]


def test_packed_runs_equal_runs_trained_alone_to_the_last_bit(regmix_grid, tmp_path):
    from safetensors.torch import load_file

    from models.train_pack import train_pack

    config = grid_config.validate(cfg.deep_merge(regmix_grid["config"], {
        "runs_dir": str(tmp_path), "strategies": {"regmix": {"stages": {"swarm": {"pack": 4, "save_model": True}}}}}))
    stages = [f"swarm-{r}" for r in range(4)]
    # One process: stopped in its first run, then resumed from that run's checkpoint.
    assert train_pack(config, "test", "regmix", 0, stages, {}, stop_after=3) is None
    assert train_pack(config, "test", "regmix", 0, stages, {})["trained"] == stages
    packed, alone = tmp_path / "test" / "regmix" / "seed0", regmix_grid["cell"]
    for r in range(4):  # 1 and 3 trained alone by the workflow, 0 and 2 first in their packs
        a, b = packed / f"swarm-{r}", alone / f"swarm-{r}"
        assert without_timing(a / "log.csv", LOG_TIMING) == without_timing(b / "log.csv", LOG_TIMING)
        assert without_timing(a / "val.csv", VAL_TIMING) == without_timing(b / "val.csv", VAL_TIMING)
        assert (a / "weights.json").read_bytes() == (b / "weights.json").read_bytes()
        assert json.loads((a / "run.json").read_text())["fingerprint"] == json.loads((b / "run.json").read_text())["fingerprint"]
    for r in (1, 3):  # trained after another run in this process, which had run other tests before
        a, b = (load_file(d / f"swarm-{r}" / "model" / "model.safetensors") for d in (packed, alone))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # Run again: every run is finished and none is trained.
    again = train_pack(config, "test", "regmix", 0, stages, {})
    assert again["trained"] == [] and again["skipped"] == stages


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
    # The fit job's time and memory, for the jobs table (eval/analysis/jobs.py reads one folder per rule).
    assert (regmix_grid["root"] / "runs" / "logs" / "benchmarks" / "fit" / "test-regmix-seed0.tsv").exists()


def test_the_fit_s_figure_is_drawn_from_the_tables(regmix_grid):
    from eval.analysis.figures import draw
    from eval.analysis.plotting import FigureData, save

    fig = draw(FigureData(grid_config.validate(regmix_grid["config"])), "regmix_fit")
    left, right = fig.axes
    assert len(left.collections) == 1 and len(left.collections[0].get_offsets()) == SWARM_RUNS  # one point per run
    assert "ρ = " in left.get_legend().get_texts()[0].get_text()
    assert [t.get_text() for t in right.get_xticklabels()] == regmix_grid["config"]["corpus"]["domains"]
    paths = save(fig, regmix_grid["root"] / "results" / "figures", "regmix_fit")
    assert all(path.stat().st_size > 10_000 for path in paths)
