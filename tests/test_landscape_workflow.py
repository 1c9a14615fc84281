"""The landscape study through the real Snakemake workflow on the fixture corpus (docs/landscape.md):
the shipped config/landscape.yaml under the test configuration, with a 3-point lattice (each
domain alone) over three domains and two seeds, uniform's regret against it checked against a
hand computation from the runs' own files, the ternary figure, and the docs' result block."""

from __future__ import annotations

import csv
import json
import re

import matplotlib
import numpy as np
import pandas as pd
import pytest

from conftest import REPO, job_counts, make_test_config, snakemake, write_config

matplotlib.use("Agg")

LANDSCAPE = REPO / "config" / "landscape.yaml"
DOMAINS = ["code", "books", "encyclopedic"]  # the study's three domains, in the fixture corpus too
# Over config/landscape.yaml: the test configuration (fixture corpus, `test` size, 30 steps) with
# uniform alone, two seeds and the corners of the triangle as the lattice.
STUDY = {
    "grid": {"strategies": ["uniform"], "seeds": [0, 1]},
    "strategies": {"lattice": {"divisions": 1, "points": 3, "stages": {"swarm": {"pack": 3}}}},
}


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    root = tmp_path_factory.mktemp("landscape")
    overlay = write_config(root / "overlay.yaml", make_test_config(root, **STUDY, corpus={"domains": DOMAINS}))
    # The evaluations, the lattice's scores and the tables (`tables` alone would only tabulate what
    # is finished: rules/results.smk); the figure is drawn in-process below, not by the figures job.
    runs = root / "runs" / "test"
    targets = [*(str(runs / "uniform" / f"seed{s}" / "final" / "eval" / "perplexity.json") for s in (0, 1)),
               *(str(runs / "lattice" / f"seed{s}" / "packs" / "swarm-scores.json") for s in (0, 1)), "tables"]
    done = snakemake(root, [LANDSCAPE, overlay], *targets)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from strategies import grid_config

    config = grid_config.load(LANDSCAPE, overlay)
    assert config["landscape"] == {"lattice": "lattice"} and config["corpus"]["domains"] == DOMAINS
    assert config["strategies"]["lattice"]["stages"]["swarm"]["save_model"] is True  # from the shipped study
    return {"root": root, "config": config, "files": [LANDSCAPE, overlay], "output": done.stdout + done.stderr}


def macro_bpb(path) -> float:
    tasks = json.loads(path.read_text())["tasks"]
    return float(np.mean([tasks[d]["bits_per_byte"] for d in DOMAINS]))


def last_val_macro(run) -> float:
    with (run / "val.csv").open() as handle:
        last = list(csv.DictReader(handle))[-1]
    return float(np.mean([float(last[f"val_loss/{d}"]) for d in DOMAINS]))


def test_the_lattice_trains_in_packs_and_is_scored_once_per_seed(study):
    counts = job_counts(study["output"])
    assert counts["train_pack"] == 2 and counts["score_lattice"] == 2  # one pack of 3 runs, one scoring job per seed
    assert counts["train"] == 2  # uniform's final models; the lattice's own final is not in the grid
    cells = study["root"] / "runs" / "test" / "lattice"
    for seed in (0, 1):
        for point, corner in enumerate(np.eye(3)[::-1]):  # (0,0,1), (0,1,0), (1,0,0)
            run = cells / f"seed{seed}" / f"swarm-{point}"
            assert json.loads((run / "weights.json").read_text())["final_weights"] == corner.tolist()
            assert (run / "eval" / "perplexity.json").is_file()


def test_regret_is_uniform_minus_the_validation_chosen_corner_on_the_test_split(study):
    root = study["root"]
    lattice = pd.read_csv(root / "results" / "tables" / "lattice.csv")
    regret = pd.read_csv(root / "results" / "tables" / "landscape.csv").set_index("strategy")
    differences, ranks = [], []
    for seed in (0, 1):
        runs = [root / "runs" / "test" / "lattice" / f"seed{seed}" / f"swarm-{p}" for p in range(3)]
        val = [last_val_macro(run) for run in runs]
        test = [macro_bpb(run / "eval" / "perplexity.json") for run in runs]
        chosen = int(np.argmin(val))  # chosen on validation, whatever the test split says
        rows = lattice[lattice.seed == seed].set_index("point")
        assert rows["chosen"].tolist() == [p == chosen for p in range(3)]
        assert rows["test_macro"].to_numpy() == pytest.approx(test)
        ours = macro_bpb(root / "runs" / "test" / "uniform" / f"seed{seed}" / "final" / "eval" / "perplexity.json")
        differences.append(ours - test[chosen])
        ranks.append(1 + sum(t < ours for t in test))
    row = regret.loc["uniform"]
    assert row["regret"] == pytest.approx(np.mean(differences))
    assert row["mean_rank"] == pytest.approx(np.mean(ranks))
    assert row["pairs"] == 2 and row["points"] == 3
    # Each corner trains on one domain alone: the lattice spreads far wider than uniform's regret.
    assert row["lattice_spread"] > abs(row["regret"])
    shown = (root / "results" / "tables" / "landscape.md").read_text()
    assert re.search(rf"\| uniform +\| [\d.]+ +\| {row['regret']:+.4f} \[", shown)
    assert f"{row['mean_rank']:.1f} of 3" in shown
    assert "The lattice: 3 mixtures" in shown


def test_the_ternary_figure_puts_the_lattice_on_the_corners_and_uniform_at_the_centre(study):
    from eval.analysis.figures import draw
    from eval.analysis.plotting import FigureData, save

    fig = draw(FigureData(study["config"]), "landscape")  # the registry's entry, as the figures job draws it
    png, _ = save(fig, study["root"] / "results" / "figures", "landscape")
    assert png.stat().st_size > 10_000
    ax = fig.axes[0]
    offsets = [np.asarray(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")]
    corners = {(0.0, 0.0), (1.0, 0.0), (0.5, round(np.sqrt(3) / 2, 6))}
    assert any({tuple(np.round(p, 6)) for p in o} == corners for o in offsets)  # the lattice points
    assert any(len(o) == 1 and np.allclose(o[0], [0.5, np.sqrt(3) / 6]) for o in offsets)  # uniform: the centroid
    assert {t.get_text().strip() for t in ax.texts} >= set(DOMAINS)


def test_a_scored_run_is_skipped_until_its_run_json_changes(study, tmp_path):
    import shutil

    from eval.harness.score_runs import already_scored

    runs = study["root"] / "runs" / "test" / "lattice" / "seed0"
    assert all(already_scored(runs / f"swarm-{p}") for p in range(3))
    copy = shutil.copytree(runs / "swarm-0", tmp_path / "swarm-0", ignore=shutil.ignore_patterns("model"))
    record = json.loads((copy / "run.json").read_text())
    (copy / "run.json").write_text(json.dumps({**record, "steps": record["steps"] + 1}))  # a retrained run
    assert not already_scored(copy)


def test_the_docs_result_block_is_written_from_the_tables(study, tmp_path):
    from eval.analysis.readme_results import BEGIN, END
    from eval.analysis.readme_results import main as readme_results

    doc = tmp_path / "landscape.md"
    doc.write_text(f"before\n{BEGIN}\n{END}\n")
    files = [str(f) for f in study["files"]]  # the study's config files, merged in order
    assert readme_results(["--config", *files, "--readme", str(doc)]) == 0
    text = doc.read_text()
    regret = pd.read_csv(study["root"] / "results" / "tables" / "landscape.csv").set_index("strategy")
    assert f"| uniform | {regret.at['uniform', 'strategy_mean']:.4f} | {regret.at['uniform', 'regret']:+.4f} [" in text
    assert "No regret is significant after Holm, and with 2 seeds none could be." in text
    assert readme_results(["--config", *files, "--readme", str(doc), "--check"]) == 0
