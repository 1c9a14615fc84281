"""`snakemake --report` without the grid's config: one line naming the config the results were
made with (mixbench/report_origin.py), instead of a warning per missing file."""

from __future__ import annotations

import yaml

from mixbench import config as cfg
from mixbench.report_origin import report_problem, requested_report, stored_config_text, stored_from

REPORT_ARGS = ["snakemake", "--report", "results/report.html"]


def test_the_report_names_the_config_the_results_were_made_with(tmp_path):
    grid_config = {"data_dir": "data", "runs_dir": str(tmp_path / "runs"), "results_dir": str(tmp_path / "results")}
    default = {**grid_config, "grid": {"sizes": ["small"]}}
    # What a grid's run leaves: its config stored under its hash, headed by its file; tables naming the hash.
    stored = tmp_path / "runs" / "configs" / "abc123.yaml"
    stored.parent.mkdir(parents=True)
    stored.write_text(stored_config_text(grid_config, ["tests/config/test.yaml"]))
    assert stored_from(stored) == "tests/config/test.yaml" and yaml.safe_load(stored.read_text()) == grid_config
    tables = tmp_path / "results" / "tables"
    tables.mkdir(parents=True)
    (tables / "perplexity.csv").write_text("size,strategy,config_hash\ntest,uniform,abc123\ntest,natural,abc123\n")
    (tables / "perplexity.md").write_text("| a |\n")

    def problem(config, missing):
        return report_problem(config, cfg.fingerprint(config), ["config/config.yaml"],
                              requested_report(REPORT_ARGS), missing=missing, needed=52)

    line = problem(default, missing=[f"{tmp_path}/results/tables/perplexity.html"])
    assert line == (f"{tmp_path}/results/ lacks 1 of the 52 tables and figures of config config/config.yaml (first: "
                    f"{tmp_path}/results/tables/perplexity.html); the results in {tmp_path}/results/ were made with "
                    f"config tests/config/test.yaml (stored as {stored}); run: snakemake --report results/report.html "
                    f"--configfile tests/config/test.yaml")
    assert "\n" not in line
    assert problem(default, missing=[]) is None  # the report of this config can be made
    stored.write_text(yaml.safe_dump(grid_config))  # a copy stored without its files: the copy is named
    assert f"run: snakemake --report results/report.html --configfile {stored}" in problem(default, ["x"])
    stored.unlink()  # stored elsewhere (another runs_dir): the hash is named
    assert "were made with another config (config_hash abc123)" in problem(default, ["x"])
    (tables / "perplexity.csv").unlink()
    assert "holds no results of another config; finish the grid first" in problem(default, ["x"])


def test_a_report_run_is_recognised_on_the_command_line():
    assert requested_report(REPORT_ARGS) == "results/report.html"
    assert requested_report(["snakemake", "--report=out.html", "--configfile", "a.yaml"]) == "out.html"
    assert requested_report(["snakemake", "--report", "--configfile", "a.yaml"]) == "report.html"  # Snakemake's default
    assert requested_report(["snakemake", "--cores", "all"]) is None
    assert requested_report(["snakemake", "--report-stylesheet", "a.css"]) is None
