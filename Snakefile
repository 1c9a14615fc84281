# mixbench: compare data-mixing strategies for GPT-2 pre-training.
#   snakemake --cores all                                  default CPU grid
#   snakemake --cores all --configfile config/paper.yaml   GPT-2 small/medium/large grid (GPUs)
# Every step is also runnable by hand as `python -m <package>.<module>` (see each rule's shell).

configfile: f"{workflow.basedir}/config/config.yaml"


include: "rules/common.smk"
include: "rules/data.smk"
include: "rules/train.smk"
include: "rules/eval.smk"
include: "rules/results.smk"


rule all:
    input:
        TABLES,
    default_target: True
