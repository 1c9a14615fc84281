# mixbench: compare data-mixing strategies for GPT-2 pre-training.
#   snakemake --cores all                                  default CPU grid
#   snakemake --cores all --configfile config/paper.yaml   GPT-2 small/medium/large grid (GPUs)
#   snakemake --cores all --configfile config/published_swarm.yaml   regressors on RegMix's released swarm (no training)
#   snakemake --cores 1 figures                           tables and figures from finished runs (never trains or evaluates)
#   snakemake --report results/report.html --configfile F  HTML report of config F's grid (default grid without it)
# Every step is also runnable by hand as `python -m <package>.<module>` (see each rule's shell).

# No `configfile:` here: rules/common.smk reads config/config.yaml only when no config file is
# given, so a user's file is complete on its own (`base:` in it layers it on another file).
report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
include: "rules/landscape.smk"
include: "rules/results.smk"
include: "rules/published_swarm.smk"


# `snakemake --report` shows this config's tables and figures: where they are missing (another
# grid's config, or none given), one line says which config the results were made with.
from mixbench.report_origin import report_problem, requested_report

if (REPORT := requested_report(sys.argv)) is not None:
    problem = report_problem(config, cfg.config_hash(config), CONFIG_FILES, REPORT,
                             missing=[f for f in (*TABLES, *FIGURE_FILES) if not os.path.exists(f)],
                             needed=len(TABLES) + len(FIGURE_FILES))
    if problem:
        sys.exit(f"mixbench: {problem}")


# A config with a `published_swarm` section is that track alone (rules/published_swarm.smk).
rule all:
    input:
        PUBLISHED_SWARM_OUTPUTS if PUBLISHED_SWARM else [TABLES, FIGURE_FILES, JOBS_TABLES],
    default_target: True
