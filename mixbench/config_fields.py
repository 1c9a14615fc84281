"""Reading a configuration's fields: strategy entries, the size and steps of every stage, the
folder of every run, and settings given once or per size or domain. Functions of a config
dict, used by the validation (mixbench/config_checks.py) and by everything that runs the grid;
``mixbench.config`` re-exports them, so ``cfg.stage_training`` and the like work as before."""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from mixbench import variants
from mixbench.errors import ConfigError

RESERVED_STRATEGY_KEYS = variants.RESERVED


def where(path) -> str:
    """A path into the config as a dotted field name."""
    return ".".join(str(p) for p in path) or "(top level)"


def strategy_entry(config: dict, name: str) -> dict:
    """The config entry of a grid strategy name; a bare registered name needs no entry."""
    return config["strategies"].get(name, {})


def strategy_class_name(config: dict, name: str) -> str:
    return strategy_entry(config, name).get("strategy", name)


def strategy_hparams(config: dict, name: str) -> dict:
    entry = strategy_entry(config, name)
    return {k: v for k, v in entry.items() if k not in RESERVED_STRATEGY_KEYS}


def stage_training(config: dict, name: str, stage: str, size: str) -> dict:
    """Size and step count of one stage of one strategy when the run it feeds has ``size``
    (`final` always uses the grid's size and ``training.steps``). A stage without a configured
    size takes the size of the run it feeds. Iterated stages (``proxy-r2``) take the settings
    of their kind (``proxy``), and so do the runs of a fan-out stage (``swarm-3``: ``swarm``)."""
    resolved = {"size": size, "steps": config["training"]["steps"]}
    if stage == "final":
        return resolved
    if stage == "fit":  # computes weights from the runs before it; trains nothing
        return {"size": size, "steps": 0}
    for layer in stage_layers(config, name, stage):
        resolved.update({k: layer[k] for k in ("size", "steps") if layer.get(k) is not None})
    return resolved


def stage_setting(config: dict, name: str, stage: str, field: str, default):
    """A field of a stage's entries as the last layer that sets it says (the strategy's over the
    global one), else ``default``."""
    settings = [layer[field] for layer in stage_layers(config, name, stage) if layer.get(field) is not None]
    return settings[-1] if settings else default


def stage_pack(config: dict, name: str, stage: str) -> int:
    """How many runs of a fan-out stage one job trains, one after another in one process
    (``pack`` of its entry; 1 by default, and for any other stage). A swarm smaller than its
    pack is one job. It changes where runs compute, not what: no run fingerprint holds it."""
    return int(stage_setting(config, name, stage, "pack", 1))


def stage_saves_model(config: dict, name: str, stage: str) -> bool:
    """Whether a run writes its model folder: always, except a fan-out stage's runs (a swarm's,
    whose val.csv and weights.json are what the fit reads), which do when ``save_model: true``."""
    if replica_index(stage) is None:
        return True
    return bool(stage_setting(config, name, stage, "save_model", False))


def pack_of(config: dict, name: str, stage: str) -> tuple[str, ...]:
    """The runs one job trains with ``stage``: the run alone, or for a run of a fan-out stage with
    ``pack`` P, its pack of P consecutive runs (swarm-0 … swarm-{P-1}, swarm-P …; the last pack
    of a swarm holds the rest)."""
    pack, index = stage_pack(config, name, stage), replica_index(stage)
    if index is None or pack == 1:
        return (stage,)
    runs = [s for s in strategy_stages(config, name) if stage_group(s) == stage_group(stage)]
    if stage not in runs:
        raise ConfigError(f"strategy {name!r} has no run {stage!r}; its runs: {describe_stages(runs)}")
    first = index - index % pack
    return tuple(runs[first:first + pack])


def stage_layers(config: dict, name: str, stage: str) -> list[dict]:
    """The config entries that set a stage: the global ``stages`` one, then the strategy's own."""
    kind = stage_kind(stage)
    return [config["stages"].get(kind, {}), strategy_entry(config, name).get("stages", {}).get(kind, {})]


def stage_allows_larger(config: dict, name: str, stage: str) -> bool:
    """``allow_larger_than_final`` as the last entry that sets it says (the strategy's over the global one)."""
    settings = [layer["allow_larger_than_final"] for layer in stage_layers(config, name, stage)
                if layer.get("allow_larger_than_final") is not None]
    return bool(settings and settings[-1])


# The `stage` wildcard of the workflow's run paths: DoReMi's rounds (proxy-r2), a swarm's runs
# (swarm-3), RegMix's fit (its own rule: it trains nothing) and the final model.
TRAINED_STAGE_PATTERN = r"(reference|proxy)(-r\d+)?|swarm-\d+|final"
STAGE_PATTERN = TRAINED_STAGE_PATTERN + "|fit"


@functools.cache  # stage names are few, and these run per run and per pair of runs
def stage_kind(stage: str) -> str:
    """The stage a run belongs to, whose settings it takes: 'proxy-r2' -> 'proxy' (a round of an
    iterated strategy), 'swarm-3' -> 'swarm' (one run of a fan-out stage), 'final' -> 'final'."""
    return re.sub(r"-r?\d+$", "", stage)


@functools.cache
def replica_index(stage: str) -> int | None:
    """The index of one run of a fan-out stage ('swarm-3' -> 3); None for any other stage."""
    match = re.fullmatch(r"[a-z]+-(\d+)", stage)
    return int(match.group(1)) if match else None


def stage_round(stage: str) -> int:
    """The round of an iterated strategy's stage: 'proxy-r2' -> 2; any other stage 1."""
    match = re.fullmatch(r".*-r(\d+)", stage)
    return int(match.group(1)) if match else 1


def same_fan_out(stage: str, other: str) -> bool:
    """Whether ``stage`` and ``other`` are runs of one fan-out stage (swarm-2 and swarm-5): they
    run side by side, and neither reads nor feeds the other."""
    return replica_index(stage) is not None and stage_group(other) == stage_group(stage)


@functools.cache
def stage_group(stage: str) -> str:
    """The stage a run is listed under in tables, plans and messages: the runs of a fan-out stage
    under their stage, one row or column for all N ('swarm-3' -> 'swarm'); any other run under its
    own name ('proxy-r2' stays 'proxy-r2')."""
    return stage_kind(stage) if replica_index(stage) is not None else stage


def one_run_per_stage(runs: dict[str, dict]) -> dict[str, dict]:
    """{stage: spec} with a fan-out stage's runs, which share their size and steps, as its first
    run alone: what a check of sizes and lengths needs to look at."""
    seen: set[str] = set()
    kept = {}
    for stage, spec in runs.items():
        group = stage_group(stage)
        if group not in seen:
            seen.add(group)
            kept[stage] = spec
    return kept


def strategy_stages(config: dict, name: str) -> tuple[str, ...]:
    """The runs a configured strategy makes per seed, in order, from its class's declaration
    (torch-free): its stages, each fan-out stage as its N runs ``swarm-0 … swarm-{N-1}``."""
    from strategies import get_strategy_class

    cls = get_strategy_class(strategy_class_name(config, name))
    hparams = {**cls.defaults, **strategy_hparams(config, name)}
    replicas = cls.replicas_for(hparams)
    return tuple(f"{stage}-{index}" if stage in replicas else stage
                 for stage in cls.stages_for(hparams) for index in range(replicas.get(stage, 1)))


def describe_stages(stages: tuple[str, ...] | list[str]) -> str:
    """A run list as prose, a fan-out stage said once with its count: 'swarm-0 … swarm-63 (64 runs), fit, final'."""
    parts = []
    for group in dict.fromkeys(map(stage_group, stages)):
        runs = [s for s in stages if stage_group(s) == group]
        parts.append(f"{runs[0]} … {runs[-1]} ({len(runs)} runs)" if group != runs[0] else group)
    return ", ".join(parts)


def resolve_stages(config: dict, name: str, stages: tuple[str, ...] | list[str], size: str) -> dict[str, dict]:
    """{stage: {"size", "steps"}} for a chain of stages whose last one runs at ``size``.

    Sizes resolve backwards: each stage without a configured size takes the size of the stage
    it feeds. A reference or proxy is therefore identified by its own size and steps, not by
    the final size it feeds: with a fixed proxy size, every final size reads the same run."""
    resolved: dict[str, dict] = {}
    feeding = size
    for position, stage in enumerate(reversed(stages)):
        spec = stage_training(config, name, stage, feeding)
        if position == 0 and spec["size"] != size:
            raise ConfigError(f"strategies.{name}: stage {stage!r} is configured at size {spec['size']!r}, "
                              f"not {size!r}; its runs live under {spec['size']}/")
        resolved[stage] = spec
        feeding = spec["size"]
    return dict(reversed(list(resolved.items())))


def run_chain(config: dict, name: str, stage: str, size: str) -> dict[str, dict]:
    """{stage: {"size", "steps"}} of one run at its own ``size`` and of every run it reads: every
    run before it, except that the runs of a fan-out stage read none of each other."""
    stages = strategy_stages(config, name)
    if stage not in stages:
        raise ConfigError(f"strategy {name!r} has no stage {stage!r}; its runs: {describe_stages(stages)}")
    before = tuple(s for s in stages[: stages.index(stage)] if not same_fan_out(stage, s))
    return resolve_stages(config, name, (*before, stage), size)


def cell_runs(config: dict, size: str, name: str) -> dict[str, dict]:
    """Every run a final model of the grid needs, {stage: {"size", "steps"}}, in stage order."""
    return resolve_stages(config, name, strategy_stages(config, name), size)


def run_dir(config: dict, size: str, name: str, seed: int | str, stage: str) -> str:
    """The folder of one run; ``size`` is the run's own size (a proxy's, not its final's)."""
    return f"{config['runs_dir']}/{size}/{name}/seed{seed}/{stage}"


def keyed_values(value) -> dict:
    """A setting given as one value for all, or as {name: value, default: value}, as a mapping."""
    return dict(value) if isinstance(value, dict) else {"default": value}


def keyed_value(value, name: str, setting: str, what: str):
    """The value of a one-or-per-name setting for ``name``: its own entry, else ``default``.
    ``what`` says what is missing, e.g. "micro-batch for size"."""
    values = keyed_values(value)
    if name not in values and "default" not in values:
        raise ConfigError(f"{setting}: names no {what} {name!r} and has no `default` (it has {values})")
    return values.get(name, values.get("default"))


def micro_batch_sizes(training: dict) -> dict[str, int]:
    """``training.micro_batch_size`` as a mapping {size or "default": micro-batch}."""
    return keyed_values(training["micro_batch_size"])


def micro_batch_size(training: dict, size: str) -> int:
    """The micro-batch of model size ``size`` (training.micro_batch_size alone; a run's own,
    which a stage entry may set, is ``run_resources(...).micro_batch_size``)."""
    return keyed_value(training["micro_batch_size"], size, "training.micro_batch_size", "micro-batch for size")


# Where and how a run computes, not what: set in `training` (one value, or one per size with a
# `default`) and overridden on a stage entry. None of them enters a run's fingerprint
# (mixbench.config.OPERATIONAL_FIELDS): every step's data is the same for any of them.
RESOURCE_FIELDS = ("processes", "nodes", "micro_batch_size", "runtime")


@dataclass(frozen=True)
class RunResources:
    """What one training run asks for: ``processes`` DDP processes on each of ``nodes`` nodes, each
    process with ``threads`` torch threads and micro-batches of ``micro_batch_size``; per node
    ``gpus`` GPUs (one per process; none on training.device cpu) and ``cpus`` CPUs (threads ×
    processes: SLURM's --cpus-per-task for the job and for the launcher's srun alike); ``runtime``
    its job's time limit in minutes (SLURM's --time; a job training a pack of runs asks for the sum)."""
    processes: int
    nodes: int
    micro_batch_size: int
    threads: int
    gpus: int
    cpus: int
    runtime: int

    @property
    def ranks(self) -> int:
        return self.nodes * self.processes


def resource_setting(config: dict, name: str, stage: str, size: str, field: str) -> tuple[int, str]:
    """One of RESOURCE_FIELDS for a run of stage ``stage`` at its own ``size``, and the field that
    sets it. Precedence: the strategy's stage entry (strategies.NAME.stages.KIND.FIELD), the global
    one (stages.KIND.FIELD), then training.FIELD: its entry for ``size``, else its ``default``."""
    kind = stage_kind(stage)
    glob, own = stage_layers(config, name, stage)
    if own.get(field) is not None:
        swept = variants.variants(config)
        return own[field], f"strategies.{swept[name].base if name in swept else name}.stages.{kind}.{field}"
    if glob.get(field) is not None:
        return glob[field], f"stages.{kind}.{field}"
    value = config["training"][field]
    key = (size if size in value else "default") if isinstance(value, dict) else None
    what = "micro-batch" if field == "micro_batch_size" else field
    return (keyed_value(value, size, f"training.{field}", f"{what} for size"),
            f"training.{field}" + (f".{key}" if key else ""))


def run_resources(config: dict, name: str, stage: str, size: str) -> RunResources:
    """The resources of one run of strategy ``name`` (stage ``stage``, e.g. swarm-3 or final, at
    its own ``size``): what the rules ask the scheduler for, what mixbench.launch starts, the
    micro-batch models/train.py uses. No stage entry sets a final model's, so for `final` any
    ``name`` (None too) gives the same. Raises ConfigError naming a keyed field without the size."""
    processes, nodes, micro, runtime = (resource_setting(config, name, stage, size, field)[0]
                                        for field in RESOURCE_FIELDS)
    threads = config["training"]["threads"]
    gpus = 0 if config["training"]["device"] == "cpu" else processes
    return RunResources(processes=processes, nodes=nodes, micro_batch_size=micro, threads=threads, gpus=gpus,
                        cpus=threads * processes, runtime=runtime)


def grid_runs(config: dict) -> dict[tuple[str, str, str], dict]:
    """{(own size, strategy, stage): {"steps", "feeds"}} of every run of the grid once (per seed):
    a reference or proxy that several final sizes read is one run, ``feeds`` naming those sizes."""
    runs: dict[tuple[str, str, str], dict] = {}
    for final_size in config["grid"]["sizes"]:
        for strategy in config["grid"]["strategies"]:
            for stage, spec in cell_runs(config, final_size, strategy).items():
                run = runs.setdefault((spec["size"], strategy, stage), {"steps": spec["steps"], "feeds": []})
                run["feeds"].append(final_size)
    return runs


def grid_run_resources(config: dict) -> dict[tuple[str, str, str], RunResources]:
    """{(strategy, stage, size): resources} of every run the grid trains, a fan-out stage's runs as
    their first (they share their resources)."""
    return {(name, stage, size): run_resources(config, name, stage, size)
            for (size, name, stage) in grid_runs(config)
            if stage != "fit" and replica_index(stage) in (None, 0)}


def domain_cap(corpus: dict, domain: str) -> int:
    """The byte cap of one domain (``corpus.max_bytes_per_domain``: one number or one per domain)."""
    return keyed_value(corpus["max_bytes_per_domain"], domain, "corpus.max_bytes_per_domain", "cap for domain")
