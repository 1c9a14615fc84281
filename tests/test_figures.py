"""Tables and figures from a fixture of finished runs (tests/run_fixture.py): every file is
produced and non-empty, and the statistics come out as the fixture's known shifts dictate."""

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import make_test_config
from eval.analysis import figure_registry
from eval.analysis.aggregate import aggregate
from eval.analysis.figure_registry import FORMATS, figure_names
from eval.analysis.figures import draw as draw_figure, make_figures
from eval.analysis.plotting import FigureData, save
from eval.analysis.table_registry import REGISTRY as TABLES, table_files, table_names
from strategies import grid_config
from registry_expectations import expected_outputs, in_registry_order
from run_fixture import SHIFT, val_loss, write_grid

# The SHA-256 of every table file the two fixture grids write: moving code must not move a byte.
# A new table is recorded here once (the failure below prints its entries); a recorded digest
# changes only with a change that means to alter that table, and says which.
DIGESTS_FILE = Path(__file__).parent / "fixtures" / "table_digests.json"
TABLE_DIGESTS = json.loads(DIGESTS_FILE.read_text())


def table_digest(path: Path) -> str:
    """The SHA-256 of a table file with each evaluation's sha256 (its ``evaluation`` column) as
    ``<sha256>``: those follow the runs' fingerprints, which hold the fixture corpus's path."""
    return hashlib.sha256(re.sub(rb"\b[0-9a-f]{64}\b", b"<sha256>", path.read_bytes())).hexdigest()


def assert_tables_unchanged(tables: Path, grid: str) -> None:
    expected = TABLE_DIGESTS[grid]
    found = {p.name: table_digest(p) for p in sorted(tables.iterdir())}
    new = {name: digest for name, digest in found.items() if name not in expected}
    assert not new, (f"{grid}: table files with no recorded digest (a new table?): if their content is right, "
                     f"add these entries under \"{grid}\" in tests/fixtures/{DIGESTS_FILE.name}: "
                     + ", ".join(f'"{name}": "{digest}"' for name, digest in new.items()))
    gone = sorted(set(expected) - set(found))
    assert not gone, f"{grid}: recorded tables no longer written: {gone} (a table removed on purpose: drop its entries)"
    changed = {name: found[name] for name in expected if found[name] != expected[name]}
    assert not changed, (f"{grid}: these tables' bytes changed: {sorted(changed)}; only for a change meant to alter "
                         f"them (say which and why), their new entries: "
                         + ", ".join(f'"{name}": "{digest}"' for name, digest in changed.items()))


def draw(config: dict, *names: str) -> None:
    """Some figures of a config, as make_figures draws them (the figures say what is missing)."""
    figures = FigureData(config)
    for name in names:
        save(draw_figure(figures, name), Path(config["results_dir"]) / "figures", name)


GRID_STRATEGIES = ["uniform", "natural", "doremi", "dograph"]


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    config = grid_config.validate(make_test_config(root, grid={"sizes": ["test", "tiny"], "seeds": [0, 1, 2],
                                                       "strategies": list(GRID_STRATEGIES)}))
    write_grid(config)
    aggregate(config)
    make_figures(config)
    return config, root / "results"


def test_every_table_is_written_in_every_format(results):
    config, out = results
    names = table_names(config)
    assert names == expected_outputs(TABLES, strategies=GRID_STRATEGIES, holds={"downstream", "several sizes"})
    # No strategy of this grid has a fit stage: it has no fit tables (not empty ones).
    assert "perplexity" in names and not [name for name in names if TABLES[name].needs == "fit stage"]
    for name in names:
        for f in table_files(name):
            assert (out / "tables" / f).stat().st_size > 100, f
    assert sorted(p.name for p in (out / "tables").iterdir()) == sorted(f for n in names for f in table_files(n))
    assert "\\begin{tabular}" in (out / "tables" / "perplexity.tex").read_text()
    assert "<table" in (out / "tables" / "comparison.html").read_text()


def test_the_tables_are_byte_for_byte_those_recorded(results):
    assert_tables_unchanged(results[1] / "tables", "four_strategies")


def test_paired_comparison_recovers_the_known_shifts(results):
    _, out = results
    comparison = pd.read_csv(out / "tables" / "comparison.csv")
    macro = comparison[comparison.metric == "bits per byte, macro avg"].set_index(["size", "strategy"])
    for size in ("test", "tiny"):
        for strategy in ("natural", "doremi", "dograph"):
            row = macro.loc[(size, strategy)]
            assert row["difference"] == pytest.approx(SHIFT[strategy])
            assert row["ci_low"] == pytest.approx(SHIFT[strategy]) and row["ci_high"] == pytest.approx(SHIFT[strategy])
            assert row["wins"] == (6 if SHIFT[strategy] < 0 else 0) and row["items"] == 6 and row["pairs"] == 3
            # A constant shift over 3 seeds: p = 2/8 = 0.25 at best, so it cannot be significant.
            assert row["p_sign_flip"] == pytest.approx(0.25) and row["verdict"] == "cannot be significant with 3 seeds"
    assert set(comparison.metric) >= {"mixbench_cloze acc, macro avg", "mixbench_choice acc_norm, macro avg"}
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in (out / "tables" / "comparison.md").read_text().splitlines()
            if line.startswith("| test ")]
    assert ["test", "doremi", "bits per byte, macro avg", "-0.1000 [-0.1000, -0.1000]", "0.25", "0.75", "0.0000",
            "7", "6 of 6", "3", "cannot be significant with 3 seeds"] in rows
    note = (out / "tables" / "comparison.md").read_text()
    assert "With 3 seeds the smallest possible sign-flip p is 0.25 (2 / 2^3); after Holm over 3 strategies, 0.75." in note
    assert "No difference in this table can be significant at 0.05; at least 7 seeds are needed" in note


def test_compute_counts_every_stage(results):
    _, out = results
    compute = pd.read_csv(out / "tables" / "compute.csv")
    doremi = compute[(compute.strategy == "doremi") & (compute["size"] == "tiny") & (compute.seed == 0)]
    assert list(doremi.stage) == ["reference", "proxy", "final"]
    # The test config fixes the stages' size at `test`: the tiny models read the test-size runs.
    assert list(doremi.stage_size) == ["test", "test", "tiny"]
    assert list(doremi.run) == ["test/doremi/seed0/reference", "test/doremi/seed0/proxy", "tiny/doremi/seed0/final"]
    rows = {tuple(c.strip() for c in line.split("|")[1:3]): line for line in
            (out / "tables" / "compute.md").read_text().splitlines()[4:]}
    # Same size: reference 1 + proxy 1.5 + final 1 = 3.5 times uniform's single stage.
    assert "| 3.50 " in rows["test", "doremi"] and "| 1.00 " in rows["tiny", "natural"]
    # Tiny: the test-size stages add 2.5 × 30k / 1.46M parameters' worth of the same tokens.
    assert "| 1.05 " in rows["tiny", "doremi"]
    # DoReMi's reference and proxy of each of 3 seeds feed both sizes; the table says so.
    assert "6 reference/proxy runs are shared by several final sizes" in (out / "tables" / "compute.md").read_text()


def test_every_figure_is_written_as_png_and_pdf_with_a_report_caption(results):
    config, out = results
    names = figure_names(config)
    assert names == expected_outputs(figure_registry.REGISTRY, strategies=GRID_STRATEGIES,
                                     holds={"downstream", "several sizes"})
    assert in_registry_order(names, figure_registry.REGISTRY)
    # Its strategies' own figures, and no sweep: the grid has no variants.
    assert {"doremi_excess", "gradient_pca", "dograph_graph"} <= set(names) and "sweeps" not in names
    signatures = {"png": b"\x89PNG", "pdf": b"%PDF"}
    for name in names:
        for fmt in FORMATS:
            data = (out / "figures" / f"{name}.{fmt}").read_bytes()
            assert data.startswith(signatures[fmt]) and len(data) > 5000, (name, fmt)
        assert figure_registry.REGISTRY[name].caption.strip(), name


def test_the_curve_tables_hold_every_measurement_with_the_cells_earlier_compute(results):
    config, out = results
    domains = config["corpus"]["domains"]
    curves = pd.read_csv(out / "tables" / "curves.csv")
    # 2 sizes × 3 seeds × (uniform, natural, dograph: 1 stage; doremi: 3) stages × 10 points × 6 domains.
    assert len(curves) == 2 * 3 * (3 + 3) * 10 * len(domains)
    final = curves[(curves["size"] == "tiny") & (curves.strategy == "doremi") & (curves.seed == 1)
                   & (curves.stage == "final")]
    assert sorted(final.step.unique()) == list(range(3, 31, 3))
    row = final[(final.step == 6) & (final.domain == domains[2])].iloc[0]
    assert row["val_loss"] == pytest.approx(val_loss(6, 2, SHIFT["doremi"]))
    # Its reference (1×) and proxy (1.5×) ran at the test size: 2.5 × 6 N T before the final run.
    assert row["upstream_flops"] == pytest.approx(2.5 * 6 * 30_000 * 30 * 8 * 32)
    assert (curves[curves.stage == "reference"]["upstream_flops"] == 0).all()
    entropy = pd.read_csv(out / "tables" / "entropy.csv")
    uniform = entropy[entropy.strategy == "uniform"]
    assert len(uniform) == 2 * 3 * 30 and uniform["entropy"].to_numpy() == pytest.approx(np.log(len(domains)))
    assert uniform["mixture"].eq("sampling").all()
    proxy = entropy[(entropy.strategy == "doremi") & (entropy.stage == "proxy")]
    assert proxy["mixture"].eq("loss-weighted").all() and (proxy["entropy"] < np.log(len(domains))).all()
    traj = pd.read_csv(out / "tables" / "trajectories.csv")
    excess = traj[(traj.strategy == "doremi") & (traj.step == 4) & (traj.seed == 0) & (traj["size"] == "test")]
    assert excess["excess"].tolist() == pytest.approx([j / 4 for j in range(len(domains))])


def test_the_trajectories_come_from_every_runs_log(results):
    config, out = results
    domains = config["corpus"]["domains"]
    traj = pd.read_csv(out / "tables" / "trajectories.csv")
    # DoReMi's proxy samples uniformly and weights its loss by α_t / p: the table holds α_t, read
    # from log.csv's loss weights (the same α_t its trace records, to log.csv's 8 decimals).
    proxy_dir = Path(config["runs_dir"]) / "test" / "doremi" / "seed1" / "proxy"
    log = pd.read_csv(proxy_dir / "log.csv")
    assert [c for c in log.columns if c.startswith("loss_weight/")] == [f"loss_weight/{d}" for d in domains]
    traced = {r["step"]: r["alpha"] for r in map(json.loads, (proxy_dir / "trace.jsonl").read_text().splitlines())}
    proxy = traj[(traj.strategy == "doremi") & (traj.stage == "proxy") & (traj.seed == 1) & (traj["size"] == "test")]
    assert proxy["mixture"].eq("loss-weighted").all() and sorted(proxy.step.unique()) == list(range(1, 31))
    for step in (1, 17, 30):
        assert proxy[proxy.step == step]["weight"].to_numpy() == pytest.approx(traced[step], abs=1e-7)
    # DoGraph's online updates move its sampling weights; a stage whose weights stay put has no rows.
    assert set(zip(traj.strategy, traj.stage)) == {("doremi", "proxy"), ("dograph", "final")}
    dograph = traj[(traj.strategy == "dograph") & (traj.seed == 0) & (traj["size"] == "test")]
    assert dograph["mixture"].eq("sampling").all() and dograph.groupby("domain")["weight"].nunique().max() == 3


def test_figures_follow_the_grid_and_its_variants(tmp_path):
    config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["uniform", "natural"],
                                                           "variants": {"dograph": {"lam": [1, 100]}}},
                                           downstream={"tasks": []}))
    assert config["grid"]["strategies"] == ["uniform", "natural", "dograph@lam=1", "dograph@lam=100"]
    names = figure_names(config)
    assert names == expected_outputs(figure_registry.REGISTRY, strategies=["uniform", "natural", "dograph"],
                                     holds={"variants"})
    assert {"sweeps", "gradient_pca"} <= set(names) and "doremi_excess" not in names
    write_grid(config)
    aggregate(config)
    assert_tables_unchanged(tmp_path / "results" / "tables", "variants")
    draw(config, "sweeps")  # every figure of a grid is drawn in the tests above
    assert (tmp_path / "results" / "figures" / "sweeps.png").stat().st_size > 1000
    assert "no downstream task configured" in (tmp_path / "results" / "tables" / "downstream.md").read_text()
    # The variants are strategies of every table, compared with uniform like the others.
    comparison = pd.read_csv(tmp_path / "results" / "tables" / "comparison.csv")
    macro = comparison[comparison.metric == "bits per byte, macro avg"].set_index("strategy")
    assert macro.loc["dograph@lam=100", "difference"] == pytest.approx(SHIFT["dograph"])
    assert "| dograph@lam=1 " in (tmp_path / "results" / "tables" / "perplexity.md").read_text()


def test_a_grid_without_moving_weights_or_curves_says_so_on_the_canvas(tmp_path):
    config = grid_config.validate(make_test_config(tmp_path, grid={"strategies": ["uniform", "natural"]},
                                           downstream={"tasks": []}))
    write_grid(config)
    for val in (tmp_path / "runs").rglob("val.csv"):  # as if training.heldout_windows were 0
        val.unlink()
    aggregate(config)
    draw(config, "trajectories", "val_curves", "val_loss_vs_flops")  # nothing moves, nothing was measured:
    assert (tmp_path / "results" / "figures" / "trajectories.png").stat().st_size > 1000
    assert (tmp_path / "results" / "figures" / "val_curves.png").stat().st_size > 1000


def test_the_readme_results_are_written_from_the_tables_and_checked_against_them(results, tmp_path):
    import yaml

    from eval.analysis.readme_results import BEGIN, END, main as readme_results

    config, _ = results
    config_file = tmp_path / "config.yaml"
    config_file.write_text(yaml.safe_dump(config))
    readme = tmp_path / "README.md"
    readme.write_text(f"before\n{BEGIN}\nstale numbers\n{END}\nafter\n")
    assert readme_results(["--config", str(config_file), "--readme", str(readme), "--check"]) == 1
    assert readme_results(["--config", str(config_file), "--readme", str(readme)]) == 0
    text = readme.read_text()
    assert text.startswith(f"before\n{BEGIN}\n") and text.endswith(f"{END}\nafter\n") and "stale" not in text
    # The fixture's shifts are constant over 3 seeds: no p below 0.25, so nothing can be significant.
    assert ("No difference from uniform is significant, and none could be: with 3 seeds the smallest possible "
            "sign-flip p is 0.25, 0.75 after Holm over 3 strategies.") in text
    assert "| doremi | -0.100 [-0.100, -0.100] | 0.75 | 6 of 6 | -0.100 | 7 |" in text
    assert readme_results(["--config", str(config_file), "--readme", str(readme), "--check"]) == 0
