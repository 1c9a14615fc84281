# One generic training rule for every stage of every strategy. A strategy's stages come from
# its class (strategies/*.py): each stage waits for the stage before it and reads its outputs.


def previous_stages(wildcards):
    stages = stages_of(wildcards.strategy)
    return stages[: stages.index(wildcards.stage)]


def upstream_runs(wildcards):
    return [
        f"{run_dir(wildcards.size, wildcards.strategy, wildcards.seed, s)}/run.json" for s in previous_stages(wildcards)
    ]


def upstream_args(wildcards):
    dirs = [f"{s}={run_dir(wildcards.size, wildcards.strategy, wildcards.seed, s)}" for s in previous_stages(wildcards)]
    return ("--upstream " + " ".join(dirs)) if dirs else ""


def train_fingerprint(wildcards):
    return mbconfig.run_fingerprint(config, wildcards.strategy)


def launcher():
    """Plain python for one process; torchrun (DDP) for several."""
    n = config["training"]["processes"]
    return PY if n == 1 else f"{PY} -m torch.distributed.run --standalone --nproc_per_node {n}"


rule train:
    input:
        tokens=rules.tokenize_corpus.output,
        upstream=upstream_runs,
    output:
        f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/{{stage}}/run.json",
    params:
        out=lambda w: run_dir(w.size, w.strategy, w.seed, w.stage),
        upstream=upstream_args,
        fingerprint=train_fingerprint,
        launcher=launcher(),
    threads: config["training"]["threads"] * config["training"]["processes"]
    log:
        f"{LOGS}/train/{{size}}-{{strategy}}-seed{{seed}}-{{stage}}.log",
    shell:
        "{params.launcher} -m models.train --config {CONFIG_FILE} --size {wildcards.size} --strategy {wildcards.strategy}"
        " --seed {wildcards.seed} --stage {wildcards.stage} --out {params.out} {params.upstream} > {log} 2>&1"
