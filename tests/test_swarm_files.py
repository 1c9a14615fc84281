"""RegMix's swarm read from files (strategies/swarm_files.py, ``swarm_files``) instead of trained:
the stages become fit → final, the fit job reads the files, and the fit's report, its tables
(fits, swarm) and its figure are those of a trained swarm."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import snakemake, write_config
from eval.analysis import collect_fits
from mixbench import config as cfg
from mixbench.errors import ConfigError
from models import fit as fit_stage
from strategies import grid_config
from strategies import runs as strategy_runs

RUNS = 24


def swarm_files(folder, domains, index=None):
    """A swarm over ``domains`` whose macro loss falls with the weight of the first domain."""
    rng = np.random.default_rng(0)
    mixtures = rng.dirichlet(np.ones(len(domains)), size=RUNS)
    losses = 4.0 - mixtures[:, [0]] * np.linspace(1.0, 0.5, len(domains)) + rng.normal(0, 1e-3, (RUNS, len(domains)))
    names = index or [str(i + 1) for i in range(RUNS)]
    (folder / "mixtures.csv").write_text("index," + ",".join(domains) + "\n" + "".join(
        f"{n}," + ",".join(f"{w:.17g}" for w in row) + "\n" for n, row in zip(names, mixtures)))
    (folder / "losses.csv").write_text("index," + ",".join(domains) + "\n" + "".join(
        f"{n}," + ",".join(f"{v:.17g}" for v in row) + "\n" for n, row in zip(names, losses)))
    return {"mixtures": str(folder / "mixtures.csv"), "losses": str(folder / "losses.csv")}, mixtures, losses


@pytest.fixture
def files_config(built_data, tmp_path):
    domains = built_data["corpus"]["domains"]
    files, mixtures, losses = swarm_files(tmp_path, domains[::-1])  # columns in another order than the corpus
    entry = {"strategy": "regmix", "swarm_files": files, "regressor": "linear", "candidates": 4000, "top_k": 40}
    raw = cfg.deep_merge(built_data, {"runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results"),
                                      "grid": {"strategies": ["from_files"], "seeds": [0]},
                                      "strategies": {"from_files": entry}})
    return grid_config.validate(raw), mixtures[:, ::-1], losses.mean(axis=1), tmp_path


def test_a_swarm_from_files_is_fitted_and_tabulated_like_a_trained_one(files_config):
    config, mixtures, macro, root = files_config
    assert strategy_runs.strategy_stages(config, "from_files") == ("fit", "final")
    size = config["grid"]["sizes"][0]
    out = root / "runs" / size / "from_files" / "seed0" / "fit"
    fit_stage.fit(config, size, "from_files", 0, out, upstream={})
    report = json.loads((out / "fit.json").read_text())
    assert [r["stage"] for r in report["runs"]] == [f"file:{i + 1}" for i in range(RUNS)]
    np.testing.assert_allclose([r["weights"] for r in report["runs"]], mixtures, atol=1e-15)  # corpus order
    np.testing.assert_allclose([r["observed"] for r in report["runs"]], macro, atol=1e-12)
    domains = config["corpus"]["domains"]
    assert report["chosen"][domains.index(domains[-1])] > 0.5  # the first column of the files: the cheapest
    cells = [(size, "from_files", 0)]  # the fit alone: the final model is not trained here
    fits, swarm = collect_fits.fits(config, cells), collect_fits.swarm(config, cells)
    assert fits["swarm_runs"].item() == RUNS and fits["spearman"].item() > 0.9 and len(swarm) == RUNS
    assert swarm["concentration"].isna().all()  # the files hold none
    tables = root / "results" / "tables"
    tables.mkdir(parents=True)
    fits.to_csv(tables / "fits.csv", index=False)
    swarm.to_csv(tables / "swarm.csv", index=False)
    from eval.analysis.figures import draw
    from eval.analysis.plotting import FigureData

    left, right = draw(FigureData(config), "regmix_fit").axes
    assert len(left.collections[0].get_offsets()) == RUNS


def test_the_fit_job_reads_the_files_and_no_swarm_trains(files_config):
    config, _, _, root = files_config
    plan = snakemake(root, write_config(root / "config.yaml", config), "-n")
    assert plan.returncode == 0, plan.stdout[-3000:] + plan.stderr[-3000:]
    fit_job = next(block for block in plan.stdout.split("\n\n") if "rule fit:" in block)
    assert "mixtures.csv" in fit_job and "losses.csv" in fit_job and "train_pack" not in plan.stdout
    assert "swarm_finished" not in plan.stdout


def test_files_over_other_domains_are_refused_before_any_job(built_data, tmp_path):
    files, _, _ = swarm_files(tmp_path, ["code", "prose"])
    raw = cfg.deep_merge(built_data, {"grid": {"strategies": ["from_files"]},
                                      "strategies": {"from_files": {"strategy": "regmix", "swarm_files": files}}})
    with pytest.raises(ConfigError, match=r"the swarm's mixtures are over \['code', 'prose'\]"):
        grid_config.validate(raw)
