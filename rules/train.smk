# One generic training rule for every stage of every strategy. A strategy's stages come from
# its class (strategies/*.py): each stage waits for the stages before it and reads their outputs.
# A run's path holds its own size: a reference or proxy of fixed size is one run per seed that
# every final size reads.


def stage_chain(wildcards):
    """{stage: {"size", "steps"}} of this run and of every run before it."""
    return mbconfig.run_chain(config, wildcards.strategy, wildcards.stage, wildcards.size)


def upstream_dirs(wildcards):
    chain = stage_chain(wildcards)
    return {s: run_dir(spec["size"], wildcards.strategy, wildcards.seed, s) for s, spec in chain.items()
            if s != wildcards.stage}


def upstream_runs(wildcards):
    return [f"{d}/run.json" for d in upstream_dirs(wildcards).values()]


def upstream_args(wildcards):
    dirs = [f"{s}={d}" for s, d in upstream_dirs(wildcards).items()]
    return ("--upstream " + " ".join(dirs)) if dirs else ""


def train_fingerprint(wildcards):
    return mbconfig.run_fingerprint(config, wildcards.strategy, stage_chain(wildcards))


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
