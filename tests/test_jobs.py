"""The jobs table: Snakemake's benchmark files summed per rule."""

from __future__ import annotations

import pandas as pd

from eval.analysis.jobs import job_rows, main, per_rule

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"


def bench(path, wall: float, rss: float, cpu: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + f"{wall}\t0:00:00\t{rss}\t1\t1\t1\t0\t0\t50\t{cpu}\n")


def test_jobs_are_summed_and_averaged_per_rule_with_the_largest_peak_memory(tmp_path):
    benchmarks = tmp_path / "benchmarks"
    bench(benchmarks / "train" / "tiny-uniform-seed0-final.tsv", 10.0, 500.0, 18.0)
    bench(benchmarks / "train" / "tiny-doremi-seed0-proxy.tsv", 30.0, 900.0, 50.0)
    bench(benchmarks / "evaluate" / "tiny-uniform-seed0.tsv", 12.5, 700.0, 11.0)
    bench(benchmarks / "build_corpus.tsv", 2.0, 40.0, 1.5)
    jobs = job_rows(benchmarks)
    assert sorted(jobs.rule) == ["build_corpus", "evaluate", "train", "train"]
    table = per_rule(jobs).set_index("rule")
    assert list(table.index) == ["train", "evaluate", "build_corpus"]  # largest total wall time first
    assert table.loc["train"].to_dict() == {"jobs": 2, "wall_total_s": 40.0, "wall_mean_s": 20.0, "cpu_total_s": 68.0,
                                            "cpu_mean_s": 34.0, "max_rss_mb": 900.0}
    main(["--benchmarks", str(benchmarks), "--out", str(tmp_path / "tables")])
    assert pd.read_csv(tmp_path / "tables" / "jobs.csv").equals(per_rule(jobs))
    md = (tmp_path / "tables" / "jobs.md").read_text()
    assert "| train | 2 | 40.0 | 20.0 | 68.0 | 34.0 | 900 |" in md and "| all | 4 | 54.5 | | 80.5 | | |" in md
