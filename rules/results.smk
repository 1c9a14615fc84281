# Tables and figures from finished runs. These rules never train or evaluate: they only read
# run.json, the evaluation results and traces. Their code is an input, so editing the
# aggregation or plotting code rebuilds them (and nothing upstream).
from eval.aggregate import CSV_ONLY, TABLE_NAMES, table_files

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
        runs=[
            f"{run_dir(size, strat, seed, stage)}/run.json"
            for size, strat, seed in final_runs()
            for stage in stages_of(strat)
        ],
        code=code("aggregate", "collect", "tables", "stats"),
    output:
        TABLES,
    log:
        f"{LOGS}/tables.log",
    shell:
        "{PY} -m eval.aggregate --config {CONFIG_FILE} > {log} 2>&1"
