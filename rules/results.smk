# Tables from finished runs. Never trains: it only reads run.json and evaluation results.

TABLES = [
    f"{RESULTS}/tables/{name}" for name in ("perplexity.csv", "perplexity.md", "weights.csv", "weights.md", "trajectories.csv")
]


rule tables:
    input:
        evals=[f"{run_dir(size, strat, seed, 'final')}/eval/perplexity.json" for size, strat, seed in final_runs()],
        runs=[
            f"{run_dir(size, strat, seed, stage)}/run.json"
            for size, strat, seed in final_runs()
            for stage in stages_of(strat)
        ],
    output:
        TABLES,
    log:
        f"{LOGS}/tables.log",
    shell:
        "{PY} -m eval.aggregate --config {CONFIG_FILE} > {log} 2>&1"
