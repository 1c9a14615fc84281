"""The published-swarm track (docs/published_swarm.md) on RegMix's released swarm, vendored under
published_swarms/regmix_1m: the notebook's correlations reproduced, the scores' arithmetic, the
released layout read, and the track through Snakemake with the shipped config."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from conftest import REPO, snakemake, write_config
from eval.analysis.published_swarm import Track, ranking_accuracy, spearman
from mixbench.errors import ConfigError
from strategies import grid_config
from strategies.swarm_files import read_swarm

CONFIG = REPO / "config" / "published_swarm.yaml"
SWARM = REPO / "published_swarms" / "regmix_1m"


@pytest.fixture(scope="module")
def settings():
    return grid_config.load(CONFIG)["published_swarm"]


def test_the_released_layout_is_read_by_domain(settings):
    runs = read_swarm(SWARM / "train_mixture_1m.csv", SWARM / "train_pile_loss_1m.csv")
    assert len(runs.index) == 512 and runs.mixtures.shape == (512, 17) and runs.losses.shape == (512, 13)
    assert runs.mixture_domains[:3] == ["arxiv", "freelaw", "nih_exporter"]
    assert runs.loss_domains[-1] == "uspto_backgrounds"
    assert runs.loss_of("pile_cc")[0] == pytest.approx(5.169478, abs=1e-6)  # run 1 of the released file
    np.testing.assert_allclose(runs.mixtures_over(runs.mixture_domains[::-1])[:, 0], runs.mixtures[:, -1])


def test_a_swarm_whose_files_disagree_is_refused_with_the_numbers(tmp_path):
    mixtures = tmp_path / "m.csv"
    mixtures.write_text("index,code,books\n1,0.5,0.5\n2,0.3,0.6\n")
    losses = tmp_path / "l.csv"
    losses.write_text("index,code\n1,3.0\n2,3.1\n")
    with pytest.raises(ConfigError, match="run 2 sums to 0.9000"):
        read_swarm(mixtures, losses)
    mixtures.write_text("index,code,books\n1,0.5,0.5\n3,0.4,0.6\n")
    with pytest.raises(ConfigError, match="same runs once each"):
        read_swarm(mixtures, losses)
    losses.write_text("index,prose\n1,3.0\n3,3.1\n")
    with pytest.raises(ConfigError, match=r"scores domains no run trains on: \['prose'\]"):
        read_swarm(mixtures, losses)


def test_rank_scores_count_ties_and_infinite_predictions_by_hand():
    observed = np.array([1.0, 2.0, 3.0, 4.0])
    # Pairs: (1,2) right, (1,3) right, (1,4) tie in the prediction (inf, inf), ... by hand: 4.5 of 6.
    predicted = np.array([0.0, 5.0, np.inf, np.inf])
    assert ranking_accuracy(predicted, observed) == pytest.approx(5.5 / 6)
    assert ranking_accuracy(observed[::-1], observed) == 0.0
    # ranks (1, 2, 3.5, 3.5) against (1, 2, 3, 4): Pearson of the ranks.
    assert spearman(predicted, observed) == pytest.approx(np.corrcoef([1, 2, 3.5, 3.5], [1, 2, 3, 4])[0, 1])


def test_the_notebooks_heldout_correlations_are_reproduced_within_0_005(settings):
    notebook = Track({**settings, "candidates": 10}).notebook()
    assert len(notebook) == 13
    worst = notebook.loc[notebook.difference.abs().idxmax()]
    assert notebook.difference.abs().max() <= 0.005, f"{worst.domain}: {worst.spearman:.4f} vs {worst.notebook_spearman}"
    assert notebook.set_index("domain").loc["pile_cc", "notebook_spearman"] == pytest.approx(0.9892)


def test_the_track_runs_through_the_workflow_with_the_shipped_config(tmp_path):
    overlay = write_config(tmp_path / "overlay.yaml", {
        "results_dir": str(tmp_path / "results"), "runs_dir": str(tmp_path / "runs"),
        "published_swarm": {"regressors": ["linear", "bimix"], "candidates": 2000}})
    done = snakemake(REPO, [CONFIG, overlay])
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "published_swarm" in done.stdout + done.stderr and "train" not in done.stdout.split("Job stats")[-1]
    frame = pd.read_csv(tmp_path / "results" / "tables" / "published_swarm.csv")
    assert list(frame.regressor.unique()) == ["linear", "bimix"] and len(frame) == 2 * 14
    macro = frame[frame.target == "macro"].set_index("regressor")
    assert macro.loc["linear", "spearman"] > 0.5 and macro.loc["linear", "heldout_runs"] == 256
    chosen = frame[[c for c in frame.columns if c.startswith("chosen/")]].to_numpy()
    np.testing.assert_allclose(chosen.sum(axis=1), 1.0, atol=1e-9)
    # Bimix's law is per domain: its fits leave out the runs without the domain.
    assert (frame[frame.regressor == "bimix"].fitted_runs < 512).all()
    table = (tmp_path / "results" / "tables" / "published_swarm.md").read_text()
    assert re.search(r"^\| linear\s+\| 0\.6", table, flags=re.M) and "Held-out Spearman ρ per target" in table
    assert (tmp_path / "results" / "figures" / "published_swarm.png").stat().st_size > 10_000
    notebook = pd.read_csv(tmp_path / "results" / "tables" / "published_swarm_notebook.csv")
    assert notebook.difference.abs().max() <= 0.005
    # docs/published_swarm.md shows the track's tables: its ρ of these two regressors (which the
    # candidates do not change) and its notebook table are this run's.
    docs = (REPO / "docs" / "published_swarm.md").read_text()
    for row in frame[frame.target != "macro"].itertuples():
        line = re.search(rf"^\| {row.target}\s+\|.*$", docs.split("Held-out Spearman ρ per target")[1], flags=re.M)
        cells = [c.strip() for c in line.group(0).split("|")[1:-1]]
        assert cells[{"linear": 2, "bimix": 5}[row.regressor]] == f"{row.spearman:.4f}", row.target
    notebook_md = (tmp_path / "results" / "tables" / "published_swarm_notebook.md").read_text()
    assert notebook_md.split("\n", 2)[2].strip() in docs
