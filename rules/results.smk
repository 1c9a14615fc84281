# Tables and figures from finished runs. These rules never train or evaluate: they only read
# run.json, the evaluation results and traces, each checked against this config and its data
# (eval/analysis/grid_check.py). Their code is an input, so editing the aggregation or plotting
# code rebuilds them (and nothing upstream). Which tables and figures a grid has, their captions
# and the tables each figure reads come from the registries (eval/analysis/table_registry.py,
# figure_registry.py).
from eval.analysis import figure_registry, table_registry
from eval.analysis.collect import cell_stage_runs
from eval.analysis.grid_check import files_state, finished_files
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


RESULT_RULES = ("tables", "figures", "jobs")


def asks_for_results_only():
    """Whether every target of this command is a table or figure: the rules tables, figures or jobs,
    or files under {results_dir}/tables or figures (`snakemake --cores 1 figures`). Snakemake 8
    and 9 set ``workflow.dag_settings`` (its ``targets``; a cluster job's ``target_jobs``) once the
    Snakefile is parsed, before any input function is called: it is read here, not at parse time.
    No target is the default, `all`."""
    settings = workflow.dag_settings
    if settings is None or not (settings.targets or settings.target_jobs):
        return False
    folders = [os.path.abspath(f"{RESULTS}/{folder}") + os.sep for folder in ("tables", "figures")]
    return (all(t in RESULT_RULES or os.path.abspath(t).startswith(tuple(folders)) for t in settings.targets)
            and all(spec.rulename in RESULT_RULES for spec in settings.target_jobs))


# Every run and evaluation the grid's tables read: the inputs of the tables when the whole grid is
# asked for (`all`, which trains and evaluates what is missing).
GRID_EVALS = [f"{run_dir(size, strat, seed, 'final')}/eval/{name}" for size, strat, seed in final_runs()
              for name in EVAL_FILES]
GRID_RUNS = list(dict.fromkeys(  # shared reference and proxy runs once; a swarm's by its marker
    stage_finished(own_size, strat, seed, stage) for size, strat, seed in final_runs()
    for stage, (own_size, _) in cell_stage_runs(config, size, strat, seed).items()))


def finished_state(wildcards):
    """Asked for tables or figures alone, the tables have no run or evaluation as input: an
    existing file as input would still rerun its job where its params or code changed (training
    the grid anew), and a missing one would be made. They read what is finished, and this digest
    of those files' sizes and times remakes them when a run or evaluation finishes or changes."""
    return files_state(finished_files(config)) if asks_for_results_only() else "the whole grid"


rule tables:
    input:
        evals=lambda wildcards: [] if asks_for_results_only() else GRID_EVALS,
        runs=lambda wildcards: [] if asks_for_results_only() else GRID_RUNS,
        landscape=lambda wildcards: [] if asks_for_results_only() else LANDSCAPE_SCORES,
        code=code(table_registry.REGISTRY, TABLE_NAMES, "eval.analysis.aggregate"),
    params:
        finished=finished_state,
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
