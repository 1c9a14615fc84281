# mixbench: compare data-mixing strategies for GPT-2 pre-training.
#   snakemake --cores all                                  default CPU grid
#   snakemake --cores all --configfile config/paper.yaml   GPT-2 small/medium/large grid (GPUs)
#   snakemake --cores 1 figures                           tables and figures from finished runs (never trains)
#   snakemake --report results/report.html                 HTML report with every table and figure
# Every step is also runnable by hand as `python -m <package>.<module>` (see each rule's shell).

# No `configfile:` here: rules/common.smk reads config/config.yaml only when no config file is
# given, so a user's file is complete on its own (`base:` in it layers it on another file).
report: "rules/report/workflow.rst"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
include: "rules/results.smk"


rule all:
    input:
        TABLES,
        FIGURE_FILES,
        JOBS_TABLES,
    default_target: True
