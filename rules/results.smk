# Tables and figures from finished runs. These rules never train or evaluate: they only read
# run.json, the evaluation results and traces. Their code is an input, so editing the
# aggregation or plotting code rebuilds them (and nothing upstream).
from pathlib import Path

from eval.aggregate import CSV_ONLY, TABLE_NAMES, table_files
from eval.collect import cell_stage_runs

TABLES = [f"{RESULTS}/tables/{f}" for name in (*TABLE_NAMES, *CSV_ONLY) for f in table_files(name)]
EVAL_FILES = ["perplexity.json"] + (["downstream.json"] if config["downstream"]["tasks"] else [])


def code(*modules):
    return [f"{workflow.basedir}/eval/{m}.py" for m in modules]


rule tables:
    input:
        evals=[
            f"{run_dir(size, strat, seed, 'final')}/eval/{name}"
            for size, strat, seed in final_runs()
            for name in EVAL_FILES
        ],
        runs=list(dict.fromkeys(  # shared reference and proxy runs once; a swarm's by its marker
            stage_finished(own_size, strat, seed, stage) for size, strat, seed in final_runs()
            for stage, (own_size, _) in cell_stage_runs(config, size, strat, seed).items()
        )),
        code=code("aggregate", "collect", "collect_curves", "collect_fits", "tables", "stats"),
    output:
        # The HTML versions go into `snakemake --report`, which cannot show Markdown.
        [
            report(path, caption=f"report/tables/{Path(path).stem}.rst", category="Tables",
                   labels={"table": Path(path).stem}) if path.endswith(".html") else path
            for path in TABLES
        ],
    benchmark:
        bench("tables"),
    log:
        f"{LOGS}/tables.log",
    shell:
        "{PY:q} -m eval.aggregate --config {CONFIG_FILE:q} > {log:q} 2>&1"


from eval.figures import FORMATS, figure_names

FIGURES = figure_names(config)
FIGURE_FILES = [f"{RESULTS}/figures/{name}.{fmt}" for name in FIGURES for fmt in FORMATS]


rule figures:
    input:
        TABLES,
        code=code("figures", "curve_figures", "gradient_figures", "fit_figures"),
    output:
        [
            report(f"{RESULTS}/figures/{name}.png", caption=f"report/figures/{name}.rst", category="Figures",
                   labels={"figure": name})
            for name in FIGURES
        ],
        [f"{RESULTS}/figures/{name}.pdf" for name in FIGURES],
    benchmark:
        bench("figures"),
    log:
        f"{LOGS}/figures.log",
    shell:
        "{PY:q} -m eval.figures --config {CONFIG_FILE:q} > {log:q} 2>&1"


# After every other job of the run: the time and memory of each, per rule.
JOBS_TABLES = [f"{RESULTS}/tables/jobs.{ext}" for ext in ("csv", "md")]


rule jobs:
    input:
        TABLES,
        FIGURE_FILES,
        code=code("jobs"),
    output:
        JOBS_TABLES,
    params:
        benchmarks=f"{LOGS}/benchmarks",
        out=f"{RESULTS}/tables",
    log:
        f"{LOGS}/jobs.log",
    shell:
        "{PY:q} -m eval.jobs --benchmarks {params.benchmarks:q} --out {params.out:q} > {log:q} 2>&1"
