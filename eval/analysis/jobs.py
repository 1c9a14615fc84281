"""Where a grid's time goes: every job's wall time, CPU time and peak memory, per rule.

    python -m eval.analysis.jobs --benchmarks runs/logs/benchmarks --out results/tables

Reads the benchmark files Snakemake writes for every job (``benchmark:`` in rules/*.smk; a
folder per rule with one file per job, or one file for a rule with a single job) and writes
``jobs.csv`` and ``jobs.md``: per rule the number of jobs and the total and mean of their wall
time and CPU time, and the largest peak resident memory. Snakemake samples CPU time and memory
while a job runs (psutil, over the job's process tree), so a job's last moments and processes
shorter than a sampling interval can escape them; wall time is exact. Timing differs from run
to run: this table is about the machine, not the results.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from mixbench.io import write_csv, write_text

COLUMNS = {"s": "wall_s", "cpu_time": "cpu_s", "max_rss": "max_rss_mb"}


def job_rows(benchmarks: Path) -> pd.DataFrame:
    """One row per job: rule, job, wall_s, cpu_s, max_rss_mb."""
    rows = []
    for path in sorted(benchmarks.rglob("*.tsv")):
        relative = path.relative_to(benchmarks)
        rule = relative.parts[0] if len(relative.parts) > 1 else path.stem
        frame = pd.read_csv(path, sep="\t")
        last = frame.iloc[-1]  # a file holds one line per repeat; the workflow runs each job once
        rows.append({"rule": rule, "job": path.stem, **{name: float(last[column]) for column, name in COLUMNS.items()}})
    return pd.DataFrame(rows, columns=["rule", "job", *COLUMNS.values()])


def per_rule(jobs: pd.DataFrame) -> pd.DataFrame:
    """Per rule: jobs, total and mean wall and CPU seconds, the largest peak RSS; largest total first."""
    grouped = jobs.groupby("rule", sort=False)
    table = pd.DataFrame({
        "jobs": grouped.size(),
        "wall_total_s": grouped["wall_s"].sum(), "wall_mean_s": grouped["wall_s"].mean(),
        "cpu_total_s": grouped["cpu_s"].sum(), "cpu_mean_s": grouped["cpu_s"].mean(),
        "max_rss_mb": grouped["max_rss_mb"].max(),
    }).sort_values("wall_total_s", ascending=False)
    return table.round(2).reset_index()


def markdown(table: pd.DataFrame) -> str:
    total = table[["jobs", "wall_total_s", "cpu_total_s"]].sum()
    lines = ["| rule | jobs | wall total (s) | wall mean (s) | CPU total (s) | CPU mean (s) | max RSS (MB) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r.rule} | {r.jobs} | {r.wall_total_s:.1f} | {r.wall_mean_s:.1f} | {r.cpu_total_s:.1f} "
              f"| {r.cpu_mean_s:.1f} | {r.max_rss_mb:.0f} |" for r in table.itertuples()]
    lines.append(f"| all | {int(total.jobs)} | {total.wall_total_s:.1f} | | {total.cpu_total_s:.1f} | | |")
    return ("Job time per rule, from Snakemake's benchmark files (wall time exact; CPU time and memory "
            "sampled while each job ran). Totals add the jobs' times: jobs that ran side by side "
            "count fully each.\n\n" + "\n".join(lines) + "\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--benchmarks", type=Path, required=True, help="the folder of Snakemake's benchmark files")
    parser.add_argument("--out", type=Path, required=True, help="folder for jobs.csv and jobs.md")
    args = parser.parse_args(argv)
    table = per_rule(job_rows(args.benchmarks))
    write_csv(table, args.out / "jobs.csv")
    text = markdown(table)
    write_text(args.out / "jobs.md", text)
    print(text)


if __name__ == "__main__":
    main()
