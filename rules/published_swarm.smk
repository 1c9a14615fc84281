# The published-swarm track (docs/published_swarm.md), when the config has a `published_swarm`
# section: one job fits every regressor on a released swarm's training runs and scores it on its
# held-out runs (eval/analysis/published_swarm.py). It trains nothing; `rule all` of such a config
# is this track alone (Snakefile).

PUBLISHED_SWARM = config.get("published_swarm")
PUBLISHED_SWARM_OUTPUTS = [
    *(f"{RESULTS}/tables/published_swarm.{ext}" for ext in ("csv", "md", "tex")),
    *(f"{RESULTS}/tables/published_swarm_notebook.{ext}" for ext in ("csv", "md")),
    *(f"{RESULTS}/figures/published_swarm.{ext}" for ext in ("png", "pdf")),
]


if PUBLISHED_SWARM:

    rule published_swarm:
        input:
            files=[*PUBLISHED_SWARM["train"].values(), *PUBLISHED_SWARM["heldout"].values(),
                   PUBLISHED_SWARM["prior"], PUBLISHED_SWARM["notebook"]],
            # Its code: a change to the regressors or the track remakes the tables.
            code=code_files(["eval.analysis.published_swarm", "eval.analysis.published_swarm_figure",
                             "strategies.regressors", "strategies.swarm_files", "strategies.regression_mixing"]),
        output:
            PUBLISHED_SWARM_OUTPUTS,
        params:
            fingerprint=fingerprint("published_swarm"),
        threads: workflow.cores
        benchmark:
            bench("published_swarm/published_swarm")
        log:
            f"{LOGS}/published_swarm.log",
        shell:
            "{PY:q} -m eval.analysis.published_swarm --config {CONFIG_FILE:q} > {log:q} 2>&1"
