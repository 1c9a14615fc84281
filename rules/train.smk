# One generic training rule for every stage of every strategy. A strategy's stages come from
# its class (strategies/*.py): each stage waits for the stages before it and reads their outputs.
# A run's path holds its own size: a reference or proxy of fixed size is one run per seed that
# every final size reads. A fan-out stage (RegMix's swarm) is N runs, swarm-0 … swarm-{N-1}, that
# read none of each other; a `fit` stage trains nothing and has a rule of its own.


def stage_of(wildcards):
    """The run's stage: the `stage` wildcard, or `fit` in the fit rule (whose path names it)."""
    return getattr(wildcards, "stage", "fit")


# Resolved once per run, not once per input function and job: a 512-run swarm's fit and final
# runs each read all 512 runs.
@functools.cache
def chain_of(strategy, stage, size):
    return mbconfig.run_chain(config, strategy, stage, size)


@functools.cache
def stage_groups(strategy):
    return list(dict.fromkeys(map(mbconfig.stage_group, mbconfig.strategy_stages(config, strategy))))


def stage_chain(wildcards):
    """{stage: {"size", "steps"}} of this run and of every run before it."""
    return chain_of(wildcards.strategy, stage_of(wildcards), wildcards.size)


def upstream_dirs(wildcards):
    chain = stage_chain(wildcards)
    return {s: run_dir(spec["size"], wildcards.strategy, wildcards.seed, s) for s, spec in chain.items()
            if s != stage_of(wildcards)}


def upstream_runs(wildcards):
    return [f"{d}/run.json" for d in upstream_dirs(wildcards).values()]


def upstream_args(wildcards):
    """``--upstream STAGE=DIR ...`` as a list, for `:q` to quote each argument."""
    dirs = [f"{s}={d}" for s, d in upstream_dirs(wildcards).items()]
    return ["--upstream", *dirs] if dirs else []


def stages_after(wildcards):
    """The scheduler's priority: how many of its strategy's stages still wait for this run. A
    reference starts before a proxy and a proxy before a final run, so that a strategy's chain is
    not left to run alone on one core at the end while the others sit idle. The runs of a
    fan-out stage count as one stage."""
    groups = stage_groups(wildcards.strategy)
    return len(groups) - 1 - groups.index(mbconfig.stage_group(stage_of(wildcards)))


@functools.cache
def fingerprint_of(strategy, stage, size):
    return mbconfig.run_fingerprint(config, strategy, chain_of(strategy, stage, size))


def train_fingerprint(wildcards):
    return fingerprint_of(wildcards.strategy, stage_of(wildcards), wildcards.size)


TRAINING = config["training"]
# GPUs per node of one run: one per DDP process, none when the config keeps training on the CPU.
TRAIN_GPUS = 0 if TRAINING["device"] == "cpu" else TRAINING["processes"]
TRAIN_THREADS = TRAINING["threads"] * TRAINING["processes"]

# How a run starts (a global, not a param: it changes where a run computes, not what, so it must
# not trigger reruns): mixbench.gpus gives the job GPUs of its own among the machine's (or its SLURM
# allocation's), then mixbench.launch starts python, torchrun, or srun + torchrun on every node.
TRAIN_LAUNCH = shlex.join([
    PY, "-m", "mixbench.gpus", "run", "--gpus", str(TRAIN_GPUS), "--",
    PY, "-m", "mixbench.launch", "--nodes", str(TRAINING["nodes"]), "--processes", str(TRAINING["processes"]),
    "--cpus", str(TRAIN_THREADS), "--gpus", str(TRAIN_GPUS), "--",
])


def train_resources():
    """What a run asks the scheduler for: `gpu` for the local scheduler (profiles/gpu) and the SLURM
    executor plugin (--gpus, the job's total) on one node; on several nodes (SLURM only) the
    plugin's per-node `gres`, and one task per node for srun."""
    nodes = TRAINING["nodes"]
    if nodes == 1:
        return {"gpu": TRAIN_GPUS}
    # `mpi` keeps the jobstep plugin from wrapping the job in an `srun -n1` step (the launcher runs
    # srun itself); tasks_per_gpu=0 keeps the plugin from turning `tasks` into --ntasks-per-gpu.
    resources = {"nodes": nodes, "tasks": nodes, "tasks_per_gpu": 0, "mpi": "srun"}
    if TRAIN_GPUS:
        resources["gres"] = f"gpu:{TRAIN_GPUS}"
    return resources


rule train:
    input:
        tokens=rules.tokenize_corpus.output,
        upstream=upstream_runs,
    output:
        f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/{{stage}}/run.json",
    wildcard_constraints:
        stage=mbconfig.TRAINED_STAGE_PATTERN,  # not `fit`: the fit rule's
    params:
        out=lambda w: run_dir(w.size, w.strategy, w.seed, w.stage),
        upstream=upstream_args,
        fingerprint=train_fingerprint,
    threads: TRAIN_THREADS
    priority: stages_after
    resources:
        **train_resources(),
    benchmark:
        bench("train/{size}-{strategy}-seed{seed}-{stage}"),
    log:
        f"{LOGS}/train/{{size}}-{{strategy}}-seed{{seed}}-{{stage}}.log",
    shell:
        "{TRAIN_LAUNCH} -m models.train --config {CONFIG_FILE:q} --size {wildcards.size:q}"
        " --strategy {wildcards.strategy:q} --seed {wildcards.seed:q} --stage {wildcards.stage:q} --out {params.out:q}"
        " {params.upstream:q} > {log:q} 2>&1"


rule fit:
    input:
        tokens=rules.tokenize_corpus.output,
        upstream=upstream_runs,
    output:
        f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/fit/run.json",
    params:
        out=lambda w: run_dir(w.size, w.strategy, w.seed, "fit"),
        upstream=upstream_args,
        fingerprint=train_fingerprint,
    priority: stages_after
    benchmark:
        bench("fit/{size}-{strategy}-seed{seed}"),
    log:
        f"{LOGS}/fit/{{size}}-{{strategy}}-seed{{seed}}.log",
    shell:
        "{PY:q} -m models.fit --config {CONFIG_FILE:q} --size {wildcards.size:q} --strategy {wildcards.strategy:q}"
        " --seed {wildcards.seed:q} --out {params.out:q} {params.upstream:q} > {log:q} 2>&1"
