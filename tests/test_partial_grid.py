"""The tables read only runs and evaluations of the current grid (eval/analysis/grid_check.py),
and an unfinished grid's tables and figures are made from what is finished and name what is
missing, without training or evaluating anything. Fake run folders from tests/run_fixture.py."""

import hashlib
import json
import shutil
from html import escape

import pandas as pd
import pytest

from conftest import job_counts, make_test_config, snakemake, write_config
from eval.analysis import collect
from eval.analysis.aggregate import aggregate
from eval.analysis.figures import draw
from eval.analysis.grid_check import check_grid
from eval.analysis.partial import MISSING_COLUMN, read_table
from eval.analysis.plotting import FigureData, save
from run_fixture import write_grid
from strategies import grid_config


def written_grid(root, strategies=("uniform",), seeds=(0, 1), **overrides):
    raw = make_test_config(root, **{"grid": {"strategies": list(strategies), "seeds": list(seeds)},
                                     "downstream": {"tasks": []}, **overrides})
    config = grid_config.validate(raw)
    write_grid(config)
    return config, raw


def final(root, strategy="uniform", seed=0):
    return root / "runs" / "test" / strategy / f"seed{seed}" / "final"


def edit_json(path, change):
    record = json.loads(path.read_text())
    change(record)
    path.write_text(json.dumps(record))


def line_of(check, folder) -> str:
    lines = [line for line in check.lines if line.split(": ")[0].endswith(str(folder))]
    assert len(lines) == 1, check.lines
    return lines[0]


def test_a_run_linked_or_copied_from_a_12_step_grid_into_a_30_step_one_is_left_out(tmp_path):
    write_grid(grid_config.validate(make_test_config(tmp_path / "short", training={"steps": 12},
                                                     grid={"strategies": ["uniform"], "seeds": [0, 1]},
                                                     downstream={"tasks": []})))
    config, _ = written_grid(tmp_path / "grid", training={"steps": 30})
    other, ours = final(tmp_path / "short"), final(tmp_path / "grid")
    shutil.rmtree(ours)
    ours.symlink_to(other)
    check = check_grid(config)
    assert check.kept == [("test", "uniform", 1)] and list(check.missing) == [("test", "uniform", 0)]
    assert line_of(check, ours) == (f"left out {ours}: a link to {other.resolve()}, outside runs_dir "
                                    f"{(tmp_path / 'grid' / 'runs').resolve()}: not a run of this grid")
    assert set(collect.perplexity(config).seed) == {1}
    # A copy is inside runs_dir, and Snakemake has no record of it either: its run.json says what made it.
    ours.unlink()
    shutil.copytree(other, ours)
    line = line_of(check_grid(config), ours)
    assert line.startswith(f"left out {ours}: made by another config (fingerprint ")
    assert "; trained 12 steps, the config asks for 30; rerun it with `snakemake --cores all --forcerun " in line
    assert set(collect.perplexity(config).seed) == {1}


def test_a_run_made_before_runs_recorded_their_inputs_is_left_out_with_how_to_rerun_it(tmp_path):
    config, _ = written_grid(tmp_path)
    edit_json(final(tmp_path) / "run.json", lambda record: record.pop("inputs"))
    assert line_of(check_grid(config), final(tmp_path)) == (
        f"left out {final(tmp_path)}: made before runs recorded their inputs; rerun it with `snakemake --cores all "
        f"--forcerun {final(tmp_path) / 'run.json'}` (and the grid's --configfile), or delete {final(tmp_path)}")


def test_a_run_without_its_own_log_is_incomplete_a_fit_included(tmp_path):
    config, _ = written_grid(tmp_path, strategies=("uniform", "regmix"), seeds=(0,))
    (final(tmp_path) / "train.log").unlink()
    check = check_grid(config)
    assert "incomplete: no train.log (a finished run writes its own log)" in line_of(check, final(tmp_path))
    assert check.kept == [("test", "regmix", 0)]  # its swarm, fit and final runs pass, the fit without a fingerprint
    fit = final(tmp_path, "regmix").parent / "fit"
    (fit / "train.log").unlink()
    assert "incomplete: no train.log" in line_of(check_grid(config), fit) and check_grid(config).kept == []


def test_runs_of_other_token_files_or_of_another_upstream_run_are_left_out(tmp_path):
    config, _ = written_grid(tmp_path, strategies=("uniform", "doremi"), seeds=(0,))
    proxy = final(tmp_path, "doremi").parent / "proxy"
    edit_json(proxy / "run.json", lambda record: record.update(wall_seconds=99.0))  # another proxy run
    check = check_grid(config)
    assert check.kept == [("test", "uniform", 0)]
    assert "made from another proxy run (" in line_of(check, final(tmp_path, "doremi"))
    edit_json(tmp_path / "data" / "tokens" / "meta.json", lambda meta: meta.update(retokenized=True))
    check = check_grid(config)
    assert check.kept == [] and "made from other tokens (" in line_of(check, final(tmp_path))


def test_an_evaluation_of_another_run_or_of_no_recorded_run_is_left_out(tmp_path):
    config, _ = written_grid(tmp_path)
    edit_json(final(tmp_path) / "run.json", lambda record: record.update(wall_seconds=99.0))  # retrained
    evaluation = final(tmp_path) / "eval" / "perplexity.json"
    assert line_of(check_grid(config), evaluation).startswith(f"left out {evaluation}: scored another run (")
    edit_json(evaluation, lambda scores: scores.pop("lineage"))
    assert "made before evaluations recorded the run they scored; rerun it with `snakemake --cores all " \
           f"--forcerun {evaluation}`" in line_of(check_grid(config), evaluation)
    assert check_grid(config).kept == [("test", "uniform", 1)]


def test_an_evaluation_scored_with_another_tokenizer_is_left_out(tmp_path):
    config, _ = written_grid(tmp_path)
    evaluation = final(tmp_path, seed=1) / "eval" / "perplexity.json"
    edit_json(evaluation, lambda scores: scores["lineage"].update(tokenizer="f" * 64))
    line = line_of(check_grid(config), evaluation)
    assert line.startswith(f"left out {evaluation}: scored with another tokenizer (ffffffffffff.. there, the run "
                           "trained with ")
    assert check_grid(config).kept == [("test", "uniform", 0)]


def test_every_row_records_the_evaluation_it_came_from(tmp_path):
    config, _ = written_grid(tmp_path, downstream={"tasks": ["mixbench_cloze"]})
    for table, name in ((collect.perplexity, "perplexity.json"), (collect.downstream, "downstream.json")):
        frame = table(config)
        for seed, digest in frame.groupby("seed")["evaluation"].unique().items():
            path = final(tmp_path, seed=seed) / "eval" / name
            assert list(digest) == [hashlib.sha256(path.read_bytes()).hexdigest()]


def test_an_unfinished_grid_is_tabulated_from_its_finished_cells_and_names_the_missing_ones(tmp_path, capsys):
    config, _ = written_grid(tmp_path, strategies=("uniform", "doremi"))
    complete = pd.read_csv(_tabulated(config, tmp_path) / "perplexity.csv")
    shutil.rmtree(final(tmp_path, "doremi", seed=1))
    tables = _tabulated(config, tmp_path)
    missing = f"missing {final(tmp_path, 'doremi', seed=1)}: not finished (no run.json)"
    assert missing in capsys.readouterr().err.splitlines()
    note = ("Missing cells (1 of 4; not finished, or left out as the tables job's log says): "
            "test/doremi/seed1 (final: not finished (no run.json))")
    for name in ("perplexity", "weights", "compute", "comparison"):
        assert (tables / f"{name}.md").read_text().endswith(f"**{note}**\n"), name
        assert escape(note) in (tables / f"{name}.html").read_text() and note in (tables / f"{name}.tex").read_text()
        csv = pd.read_csv(tables / f"{name}.csv")
        marked = csv[csv[MISSING_COLUMN].notna()]
        assert marked[["size", "strategy", "seed", MISSING_COLUMN]].values.tolist() == [
            ["test", "doremi", 1, "final: not finished (no run.json)"]], name
    assert "| (1 of 2 seeds)" not in (tables / "perplexity.md").read_text()
    assert " (1 of 2 seeds) |" in (tables / "perplexity.md").read_text()
    # Read back without those rows, the table is the finished cells' rows of the complete grid's.
    frame, cells = read_table(tables / "perplexity.csv")
    assert cells == {"test/doremi/seed1": "final: not finished (no run.json)"}
    expected = complete[~((complete.strategy == "doremi") & (complete.seed == 1))].reset_index(drop=True)
    pd.testing.assert_frame_equal(frame, expected)
    # Each figure carries the line.
    figures = FigureData(config)
    assert figures.missing_line() == "Missing cells (1, see the tables): test/doremi/seed1 (final: not finished (no run.json))"
    fig = draw(figures, "bits_per_byte")
    save(fig, tmp_path / "figures", "bits_per_byte", footer=figures.missing_line())
    assert figures.missing_line() in [text.get_text() for text in fig.texts]
    assert ("test", "doremi", 1) not in figures.kept_cells() and ("test", "doremi", 0) in figures.kept_cells()


def _tabulated(config, root):
    aggregate(config)
    return root / "results" / "tables"


def test_a_grid_with_no_finished_cell_has_no_tables_and_says_why(tmp_path):
    config, _ = written_grid(tmp_path, seeds=(0,))
    shutil.rmtree(final(tmp_path))
    with pytest.raises(Exception, match="no cell of the grid in .* is finished and made by this config"):
        aggregate(config)


def test_asked_for_figures_the_workflow_schedules_no_training_and_no_evaluation(tmp_path):
    _, raw = written_grid(tmp_path, strategies=("uniform", "doremi"))
    shutil.rmtree(final(tmp_path, "doremi", seed=1))  # unfinished: a final run and its evaluation to go
    config_file = write_config(tmp_path / "config.yaml", raw)
    for targets in (["figures"], ["tables", str(tmp_path / "results" / "figures" / "bits_per_byte.png")]):
        result = snakemake(tmp_path, config_file, "-n", *targets)
        assert result.returncode == 0, result.stderr[-2000:]
        assert job_counts(result.stdout + result.stderr) == {"tables": 1, "figures": 1}, targets
    # The default target still trains and evaluates what is missing, then tabulates.
    counts = job_counts((result := snakemake(tmp_path, config_file, "-n")).stdout + result.stderr)
    assert counts["train"] >= 1 and counts["evaluate"] >= 1 and counts["tables"] == 1, counts
