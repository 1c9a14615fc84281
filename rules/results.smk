# Tables and figures from finished runs. These rules never train or evaluate: they only read
# run.json, the evaluation results and traces. Their code is an input, so editing the
# aggregation or plotting code rebuilds them (and nothing upstream). Which tables and figures a
# grid has, their captions and the tables each figure reads come from the registries
# (eval/analysis/table_registry.py, figure_registry.py).
from eval.analysis import figure_registry, table_registry
from eval.analysis.collect import cell_stage_runs
from eval.analysis.outputs import code_files, write_captions

TABLE_NAMES = table_registry.table_names(config)
TABLES = [f"{RESULTS}/tables/{f}" for name in TABLE_NAMES for f in table_registry.table_files(name)]
EVAL_FILES = ["perplexity.json"] + (["downstream.json"] if config["downstream"]["tasks"] else [])
# The report's captions, written from the registries (the one place each text is kept) into
# Snakemake's own folder of the working directory: parsing writes nothing under runs/ or results/.
CAPTIONS = ".snakemake/report_captions"
TABLE_CAPTIONS = write_captions(table_registry.REGISTRY, TABLE_NAMES, f"{CAPTIONS}/tables")


def code(registry, names, entry_point):
    """The source files the outputs ``names`` are made with: a change to any of them remakes them."""
    return [str(path) for path in code_files([entry_point, *(registry[n].function.split(":")[0] for n in names)])]


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
        code=code(table_registry.REGISTRY, TABLE_NAMES, "eval.analysis.aggregate"),
    output:
        # The HTML versions go into `snakemake --report`, which cannot show Markdown.
        [
            report(path, caption=str(TABLE_CAPTIONS[name]), category="Tables", labels={"table": name})
            if path.endswith(".html") else path
            for name in TABLE_NAMES for path in [f"{RESULTS}/tables/{f}" for f in table_registry.table_files(name)]
        ],
    benchmark:
        bench("tables"),
    log:
        f"{LOGS}/tables.log",
    shell:
        "{PY:q} -m eval.analysis.aggregate --config {CONFIG_FILE:q} > {log:q} 2>&1"


FIGURES = figure_registry.figure_names(config)
FIGURE_FILES = [f"{RESULTS}/figures/{name}.{fmt}" for name in FIGURES for fmt in figure_registry.FORMATS]
FIGURE_CAPTIONS = write_captions(figure_registry.REGISTRY, FIGURES, f"{CAPTIONS}/figures")


rule figures:
    input:
        [f"{RESULTS}/tables/{table}.csv" for table in figure_registry.figure_tables(config)],
        code=code(figure_registry.REGISTRY, FIGURES, "eval.analysis.figures"),
    output:
        [
            report(f"{RESULTS}/figures/{name}.png", caption=str(FIGURE_CAPTIONS[name]), category="Figures",
                   labels={"figure": name})
            for name in FIGURES
        ],
        [f"{RESULTS}/figures/{name}.pdf" for name in FIGURES],
    benchmark:
        bench("figures"),
    log:
        f"{LOGS}/figures.log",
    shell:
        "{PY:q} -m eval.analysis.figures --config {CONFIG_FILE:q} > {log:q} 2>&1"


# After every other job of the run: the time and memory of each, per rule.
JOBS_TABLES = [f"{RESULTS}/tables/jobs.{ext}" for ext in ("csv", "md")]


rule jobs:
    input:
        TABLES,
        FIGURE_FILES,
        code=[str(path) for path in code_files(["eval.analysis.jobs"])],
    output:
        JOBS_TABLES,
    params:
        benchmarks=f"{LOGS}/benchmarks",
        out=f"{RESULTS}/tables",
    log:
        f"{LOGS}/jobs.log",
    shell:
        "{PY:q} -m eval.analysis.jobs --benchmarks {params.benchmarks:q} --out {params.out:q} > {log:q} 2>&1"
