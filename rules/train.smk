# One generic training rule for every stage of every strategy. A strategy's stages come from
# its class (strategies/*.py): each stage waits for the stages before it and reads their outputs.
# A run's path holds its own size: a reference or proxy of fixed size is one run per seed that
# every final size reads. A fan-out stage (RegMix's swarm) is N runs, swarm-0 … swarm-{N-1}, that
# read none of each other; with `pack` P > 1 on its stage entry, one job (train_pack) trains P of
# them in one process and writes a marker, packs/swarm-{first}-{last}.json. The runs after the
# swarm wait for packs/swarm.json (rule swarm_finished), written once every run is finished. A
# `fit` stage trains nothing and has a rule of its own.

from mixbench.launch import job_resources

# A training job's time limit is the config's (training.runtime, per size, under a stage entry's
# `runtime`): set-resources in a profile or on the command line would replace it for every run.
for rule_name in ("train", "train_pack"):
    if "runtime" in workflow.resource_settings.overwrite_resources.get(rule_name, {}):
        sys.exit(f"mixbench: set-resources {rule_name}:runtime (in a profile or --set-resources) would override "
                 f"training.runtime and the stages' `runtime` for every training job; set them in the config instead")

# A run that asks for more GPUs than the scheduler's pool (profiles/gpu: the machine's, or
# --resources gpu=G) would fail when it starts, after the runs before it: refuse the grid now.
# (An empty pool is the preflight's to report.)
GPU_POOL = getattr(workflow.global_resources.get("gpu"), "value", None)
if isinstance(GPU_POOL, int) and GPU_POOL > 0:
    for (strategy, stage, size), run in strategy_runs.grid_run_resources(config).items():
        if run.nodes == 1 and run.gpus > GPU_POOL:
            sys.exit(f"mixbench: {strategy}'s {cfg.Stage.parse(stage).group} at size {size!r} asks for {run.gpus} GPUs "
                     f"(processes: {cfg.resource_setting(config, strategy, stage, size, 'processes')[1]}) "
                     f"and the GPU pool has {GPU_POOL} (resources gpu: profiles/gpu counts the machine's); "
                     f"lower it in a config file given after yours")


def stage_of(wildcards):
    """The run's stage: the `stage` wildcard; in a pack's rule, its first run (its runs share
    their upstream runs, resources and priority); `fit` in the fit rule (whose path names it)."""
    if hasattr(wildcards, "first"):
        return f"{wildcards.group}-{wildcards.first}"
    return getattr(wildcards, "stage", "fit")


# Resolved once per run, not once per input function and job: a 512-run swarm's fit and final
# runs each read all 512 runs.
@functools.cache
def chain_of(strategy, stage, size):
    try:
        return strategy_runs.run_chain(config, strategy, stage, size)
    except ConfigError as exc:  # a target names a run its strategy does not have
        sys.exit(f"mixbench: no run {RUNS}/{size}/{strategy}/seed*/{stage} in this grid: {exc}; name one of "
                 f"its runs as the target (snakemake -n --summary lists every file)")


@functools.cache
def stage_groups(strategy):
    return list(dict.fromkeys(map(lambda s: cfg.Stage.parse(s).group, strategy_runs.strategy_stages(config, strategy))))


def stage_chain(wildcards):
    """{stage: {"size", "steps"}} of this run and of every run before it."""
    return chain_of(wildcards.strategy, stage_of(wildcards), wildcards.size)


def upstream_dirs(wildcards):
    chain = stage_chain(wildcards)
    return {s: run_dir(spec["size"], wildcards.strategy, wildcards.seed, s) for s, spec in chain.items()
            if s != stage_of(wildcards)}


@functools.cache
def pack_of(strategy, stage):
    return strategy_runs.pack_of(config, strategy, stage)


def run_target(size, strategy, seed, stage):
    """The file that says a run is finished: its run.json, or for a run of a packed fan-out stage
    (`pack` > 1) its pack's marker, which the job writes once every run of the pack is finished."""
    parsed = cfg.Stage.parse(stage)
    if parsed.replica is None or cfg.stage_pack(config, strategy, stage) == 1:
        return f"{run_dir(size, strategy, seed, stage)}/run.json"
    pack = pack_of(strategy, stage)
    first, last = (cfg.Stage.parse(s).replica for s in (pack[0], pack[-1]))
    return f"{RUNS}/{size}/{strategy}/seed{seed}/packs/{parsed.group}-{first}-{last}.json"


def stage_finished(size, strategy, seed, stage):
    """The file that says a run is finished to the runs after it and the tables: its run.json, or
    for a run of a fan-out stage the whole stage's marker (rule swarm_finished)."""
    parsed = cfg.Stage.parse(stage)
    if parsed.replica is None:
        return f"{run_dir(size, strategy, seed, stage)}/run.json"
    return f"{RUNS}/{size}/{strategy}/seed{seed}/packs/{parsed.group}.json"


def upstream_runs(wildcards):
    files = {}
    for stage, spec in stage_chain(wildcards).items():
        if stage != stage_of(wildcards):
            path = stage_finished(spec["size"], wildcards.strategy, wildcards.seed, stage)
            # A fan-out stage's marker as `ancient`: see rule swarm_finished.
            files[path] = path if cfg.Stage.parse(stage).replica is None else ancient(path)
    return list(files.values())


def upstream_args(wildcards):
    """``--upstream STAGE=DIR ...`` as a list, for `:q` to quote each argument."""
    dirs = [f"{s}={d}" for s, d in upstream_dirs(wildcards).items()]
    return ["--upstream", *dirs] if dirs else []


def stages_after(wildcards):
    """How many of its strategy's stages still wait for this run; the runs of a fan-out stage
    count as one stage."""
    groups = stage_groups(wildcards.strategy)
    return len(groups) - 1 - groups.index(cfg.Stage.parse(stage_of(wildcards)).group)


@functools.cache
def seed_priority_step():
    """More than any grid strategy's stages after its first: one seed's priorities above the next's."""
    return max(len(stage_groups(strategy)) for strategy in GRID["strategies"])


def run_priority(wildcards):
    """The scheduler's priority: the grid's seeds in order, then within a seed `stages_after`.
    Seed first, so that the first seed's final models (every strategy's, every size) finish
    before the later seeds' swarms, references and proxies start: a user has a whole seed of
    results after about a third of the grid, rather than no final model until every seed's
    swarm is done. Within a seed a reference starts before a proxy and a swarm or proxy before a
    final run, so that a strategy's chain is not left to run alone at the end while the others
    sit idle; whenever the current seed has fewer ready jobs than free slots, the next seed's
    fill them, so no slot waits for a seed to finish."""
    seeds = [str(seed) for seed in GRID["seeds"]]
    # A run of a seed outside the grid (a target given by hand) with the last seed's.
    later = len(seeds) - 1 - seeds.index(wildcards.seed) if wildcards.seed in seeds else 0
    return later * seed_priority_step() + stages_after(wildcards)


@functools.cache
def fingerprint_of(strategy, stage, size):
    return strategy_runs.run_fingerprint(config, strategy, chain_of(strategy, stage, size))


def train_fingerprint(wildcards):
    return fingerprint_of(wildcards.strategy, stage_of(wildcards), wildcards.size)


@functools.cache
def resources_of(strategy, stage, size):
    return cfg.run_resources(config, strategy, stage, size)


def run_resources(wildcards):
    """The run's processes, nodes, GPUs, CPUs and time limit: training's, per size, under its
    stage entry's (mixbench.config.run_resources)."""
    return resources_of(wildcards.strategy, stage_of(wildcards), wildcards.size)


def job_resource(name):
    """One resource of a training job (mixbench.launch.job_resources; None leaves it unset)."""
    return lambda wildcards: job_resources(run_resources(wildcards)).get(name)


# Every resource a training job may ask for; which ones a job sets depends on its nodes.
TRAIN_RESOURCES = ("nodes", "cpus_per_task", "runtime", "gpus_per_node", "processes_per_node", "gpu", "tasks",
                   "tasks_per_gpu", "mpi", "gres")

# Every attempt's output is appended to the run's own RUN/train.log (mixbench/training_log.py),
# which outlives a rerun; the job's log (log:, which Snakemake deletes before a rerun) says where it is.
TRAINING_LOG_TO = "{PY:q} -m mixbench.training_log --run {params.out:q} -- "

# How a run starts, from the job's own resources (not params: they change where a run computes,
# not what, so they must not trigger reruns): mixbench.gpus gives the job GPUs of its own among
# the machine's (or its SLURM allocation's), then mixbench.launch starts python, torchrun, or
# srun + torchrun on every node. The CPUs per node given to srun are the job's SLURM request.
TRAIN_LAUNCH = (
    "{PY:q} -m mixbench.gpus run --gpus {resources.gpus_per_node:q} -- {PY:q} -m mixbench.launch"
    " --nodes {resources.nodes:q} --processes {resources.processes_per_node:q} --cpus {resources.cpus_per_task:q}"
    " --gpus {resources.gpus_per_node:q} --"
)


rule train:
    input:
        tokens=rules.tokenize_corpus.output,
        upstream=upstream_runs,
    output:
        f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/{{stage}}/run.json",
    wildcard_constraints:
        stage=cfg.TRAINED_STAGE_PATTERN,  # from the kinds of stage (mixbench/_stages.py); not `fit`: the fit rule's
    params:
        out=lambda w: run_dir(w.size, w.strategy, w.seed, w.stage),
        upstream=upstream_args,
        fingerprint=train_fingerprint,
    threads: lambda wildcards: run_resources(wildcards).cpus
    priority: run_priority
    resources:
        **{name: job_resource(name) for name in TRAIN_RESOURCES},
    benchmark:
        bench("train/{size}-{strategy}-seed{seed}-{stage}"),
    log:
        f"{LOGS}/train/{{size}}-{{strategy}}-seed{{seed}}-{{stage}}.log",
    shell:
        TRAINING_LOG_TO + TRAIN_LAUNCH + " -m models.train --config {CONFIG_FILE:q} --size {wildcards.size:q}"
        " --strategy {wildcards.strategy:q} --seed {wildcards.seed:q} --stage {wildcards.stage:q} --out {params.out:q}"
        " {params.upstream:q} > {log:q} 2>&1"


def pack_stages(wildcards):
    """The runs of the pack its marker names; a name that is not a pack of the config is refused."""
    first = stage_of(wildcards)
    pack = pack_of(wildcards.strategy, first)
    if pack[0] != first or pack[-1] != f"{wildcards.group}-{wildcards.last}":
        raise ConfigError(f"{wildcards.strategy}: runs {first} … {wildcards.group}-{wildcards.last} are not a pack "
                          f"of the config (pack {cfg.stage_pack(config, wildcards.strategy, first)}: "
                          f"{pack[0]} … {pack[-1]})")
    return list(pack)


# P runs of a fan-out stage in one job, one after another (models/train_pack.py): the runs'
# folders are as if each had its own job, each with its own RUN/train.log, and the marker lists
# them once all are finished; the job's log holds the pack's own lines. A pack that was stopped
# resumes with its first unfinished run.
rule train_pack:
    input:
        tokens=rules.tokenize_corpus.output,
        upstream=upstream_runs,
    output:
        f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/packs/{{group}}-{{first}}-{{last}}.json",
    wildcard_constraints:
        group="|".join(cfg.FAN_OUT_KINDS),  # the fan-out stage (mixbench/_stages.py: only `swarm` fans out)
        first=r"\d+",
        last=r"\d+",
    params:
        stages=pack_stages,
        upstream=upstream_args,
        fingerprint=train_fingerprint,  # one run's: its siblings' differ only in their names
    threads: lambda wildcards: run_resources(wildcards).cpus
    priority: run_priority
    resources:
        **{name: job_resource(name) for name in TRAIN_RESOURCES if name != "runtime"},
        # A stage's runtime is one run's: the pack's job asks for the time of all its runs.
        runtime=lambda wildcards: run_resources(wildcards).runtime * len(pack_stages(wildcards)),
    benchmark:
        bench("train_pack/{size}-{strategy}-seed{seed}-{group}-{first}-{last}"),
    log:
        f"{LOGS}/train/{{size}}-{{strategy}}-seed{{seed}}-{{group}}-{{first}}-{{last}}.log",
    shell:
        TRAIN_LAUNCH + " -m models.train_pack --config {CONFIG_FILE:q} --size {wildcards.size:q}"
        " --strategy {wildcards.strategy:q} --seed {wildcards.seed:q} --stages {params.stages:q}"
        " --manifest {output:q} {params.upstream:q} > {log:q} 2>&1"


def fan_out_runs(wildcards):
    """What says each run of the fan-out stage is finished: its run.json, or its pack's marker."""
    runs = [s for s in strategy_runs.strategy_stages(config, wildcards.strategy) if cfg.Stage.parse(s).group == wildcards.group]
    return list(dict.fromkeys(run_target(wildcards.size, wildcards.strategy, wildcards.seed, s) for s in runs))


localrules:
    swarm_finished,


# Every run of a fan-out stage finished, whatever its `pack`: the runs after it (the fit, the final
# model) wait for this file as `ancient`, so that changing `pack`, which changes the files this
# rule reads and reruns it, reruns neither them nor any run; what changes a swarm's results
# changes their fingerprint (params), which reruns them.
rule swarm_finished:
    input:
        fan_out_runs,
    output:
        f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/packs/{{group}}.json",
    wildcard_constraints:
        group="|".join(cfg.FAN_OUT_KINDS),
    run:
        from mixbench.io import write_json

        write_json(output[0], {"finished": list(input)})


rule fit:
    input:
        tokens=rules.tokenize_corpus.output,
        upstream=upstream_runs,
        files=lambda wildcards: strategy_runs.strategy_input_files(config, wildcards.strategy),  # a swarm read from files
    output:
        f"{RUNS}/{{size}}/{{strategy}}/seed{{seed}}/fit/run.json",
    params:
        out=lambda w: run_dir(w.size, w.strategy, w.seed, "fit"),
        upstream=upstream_args,
        fingerprint=train_fingerprint,
    priority: run_priority
    benchmark:
        bench("fit/{size}-{strategy}-seed{seed}"),
    log:
        f"{LOGS}/fit/{{size}}-{{strategy}}-seed{{seed}}.log",
    shell:
        TRAINING_LOG_TO + "{PY:q} -m models.fit --config {CONFIG_FILE:q} --size {wildcards.size:q}"
        " --strategy {wildcards.strategy:q} --seed {wildcards.seed:q} --out {params.out:q} {params.upstream:q}"
        " > {log:q} 2>&1"
