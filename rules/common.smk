# Validation of the config (before any job runs) and the helpers every rule file uses.
import functools
import os
import re
import shlex
import sys

import yaml

sys.path.insert(0, workflow.basedir)
# Jobs run `python -m <package>.<module>`: make the repository importable from any working directory.
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [workflow.basedir, os.environ.get("PYTHONPATH")]))

# Jobs run with the interpreter that runs Snakemake (the virtualenv's), whatever `python` is on PATH.
PY = sys.executable

from mixbench import config as cfg
from mixbench.errors import ConfigError
from strategies import get_strategy_class, grid_config
from strategies import runs as strategy_runs
from corpus.spool import SPLITS

from eval.harness.task_index import GENERATED as GENERATED_TASKS, check_task_names

# The config: the files given to --configfile/--configfiles, merged in order, each over the
# `base:` chain it names (mixbench.config.read_files), or config/config.yaml when none is given
# (the Snakefile names no configfile: Snakemake would layer it under every user's file); then
# `--config key=value` on top. Snakemake's own merge of the same files is not used: it cannot
# follow `base:`.
CONFIG_FILES = ([str(path) for path in workflow.config_settings.configfiles]
                or [f"{workflow.basedir}/config/config.yaml"])

try:
    config = grid_config.validate(cfg.deep_merge(cfg.read_files(*CONFIG_FILES),
                                               dict(workflow.config_settings.config)))
    # Registry names are looked up once per lm-eval version (~20 s), then from the cache.
    check_task_names(config["downstream"]["tasks"], cache_dir=f"{config['data_dir']}/lm_eval_tasks")
except ConfigError as exc:
    sys.exit(f"mixbench: {exc}")

DATA = config["data_dir"]
RUNS = config["runs_dir"]


onstart:
    # Before the first job, not on a dry run (a dry run of the paper grid must work offline): the
    # corpus and tokenizer sources still to be read can be read (files, packages, the hub).
    from corpus import identity
    from corpus.sources import check_source
    from corpus.tokenizer import check_tokenizer_source
    from mixbench.errors import MixbenchError
    from mixbench.gpu_checks import EXPECT_GPU
    from models.preflight import expected_gpu_level, preflight

    # Only where a job will read them: the published-swarm track (rules/published_swarm.smk) reads none.
    to_run = {job.rule.name for job in workflow.dag.needrun_jobs()}
    try:
        if "build_corpus" in to_run and not identity.built(f"{DATA}/corpus", config, "corpus"):
            check_source(config["corpus"])
        if "train_tokenizer" in to_run and not identity.built(f"{DATA}/tokenizer", config, "tokenizer"):
            check_tokenizer_source(config["tokenizer"])
    except MixbenchError as exc:
        sys.exit(f"mixbench: {exc}")
    # What the jobs may expect of GPUs: said outright (e.g. the SLURM path rehearsed on CPU nodes),
    # else none on training.device: cpu, the torch build under SLURM (the GPUs are on the nodes),
    # the machine's GPUs under profiles/gpu or any --resources gpu=N, else none (a laptop's CPU).
    # Every job inherits it: mixbench.gpus and models/device.py hold a job to it.
    resources = workflow.resource_settings
    if os.environ.get(EXPECT_GPU):
        asked = os.environ[EXPECT_GPU]
    elif "slurm" in workflow.executor_plugin.name:
        asked = "build"
    else:
        asked = "machine" if "gpu" in resources.resources else None
    try:
        expect_gpu = expected_gpu_level(config, asked)
    except MixbenchError as exc:
        sys.exit(f"mixbench: {exc}")
    os.environ[EXPECT_GPU] = expect_gpu
    # Before anything trains or evaluates: the evaluation datasets are cached, a GPU run gets its
    # GPUs, the disk holds the grid (models/preflight.py), each failure said at once with its fix.
    if to_run & {"train", "train_pack", "evaluate"}:
        # Runs training at once, each holding checkpoints: at most one per GPU, job slot or core.
        gpus = resources.resources.get("gpu")
        parallel = getattr(gpus, "value", gpus) if expect_gpu == "machine" else (
            resources.nodes if expect_gpu == "build" else resources.cores)
        try:
            lines, problems = preflight([CONFIG_FILE], expect_gpu=expect_gpu, parallel_runs=max(1, int(parallel or 1)))
        except MixbenchError as exc:
            sys.exit(f"mixbench: {exc}")
        print("\n".join(f"mixbench: {line}" for line in lines), file=sys.stderr)
        if problems:  # the same lines as `python -m models.preflight --config CONFIG_FILE`
            sys.exit(f"mixbench: the preflight found {len(problems)} problem(s); nothing trains until they are "
                     f"fixed:\n" + "\n".join(f"  - {p}" for p in problems))
    # What writes cut short by a crash left behind (mixbench/io.py): only temporaries whose writer
    # is gone, so that another Snakemake's jobs in this folder keep theirs, and none in run folders
    # a live trainer holds (one Snakemake killed before this one may have left it running).
    from mixbench.io import UNRECORDED_WRITER_IDLE_S, remove_stale_temporaries
    from mixbench.runlock import held_by_another

    for root in (DATA, RUNS, config["results_dir"]):
        for path in remove_stale_temporaries(root, skip=held_by_another, unrecorded_idle_s=UNRECORDED_WRITER_IDLE_S):
            print(f"mixbench: removed {path}, left by a write that a crash cut short", file=sys.stderr)


RESULTS = config["results_dir"]
LOGS = f"{RUNS}/logs"
DOMAINS = config["corpus"]["domains"]
GRID = config["grid"]

# Jobs read the exact config this workflow was parsed with, stored under its hash (headed by the
# files it was read from: a report run without them names them, mixbench/report_origin.py).
CONFIG_FILE = f"{RUNS}/configs/{cfg.config_hash(config)}.yaml"
if not os.path.exists(CONFIG_FILE):
    from mixbench.errors import MixbenchError
    from mixbench.io import write_text
    from mixbench.report_origin import stored_config_text

    try:
        write_text(CONFIG_FILE, stored_config_text(config, CONFIG_FILES))
    except MixbenchError as exc:  # no room there (mixbench/io.py says so)
        sys.exit(f"mixbench: {exc}")
    except OSError as exc:  # runs_dir under a file, or a folder this user cannot write
        sys.exit(f"mixbench: cannot write {CONFIG_FILE}: {exc.strerror} ({exc.filename}); set runs_dir "
                 f"(now {RUNS!r}) to a folder this user can create and write")


def bench(name):
    """A job's benchmark file (wall time, CPU time, peak memory), read into results/tables/jobs.*."""
    return f"{LOGS}/benchmarks/{name}.tsv"


def fingerprint(*sections):
    """Hash of the config sections a rule depends on: a change there reruns the rule (params trigger)."""
    return cfg.fingerprint(cfg.relevant_sections(config, *sections))


def stages_of(strategy):
    return strategy_runs.strategy_stages(config, strategy)


def run_dir(size, strategy, seed, stage):
    """A run's folder; ``size`` is the run's own size (a shared proxy's, not its final's)."""
    return cfg.run_dir(config, size, strategy, seed, stage)


def final_runs():
    """(size, strategy, seed) of every cell of the grid."""
    return [(size, strat, seed) for size in GRID["sizes"] for strat in GRID["strategies"] for seed in GRID["seeds"]]


from mixbench.model_sizes import SIZES

wildcard_constraints:
    stage=cfg.STAGE_PATTERN,
    seed=r"\d+",
    size="|".join(map(re.escape, SIZES)),
    # The grid's strategies, and the landscape study's lattice (rules/landscape.smk) where it has one.
    strategy="|".join(map(re.escape, dict.fromkeys([*GRID["strategies"], *([config["landscape"]["lattice"]] if config.get("landscape") else [])]))),
