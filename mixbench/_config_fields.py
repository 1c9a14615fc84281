"""Reading a configuration's fields: strategy entries, the size and steps of every stage, the
folder of every run, and settings given once or per size or domain. Functions of a config dict
that need no strategy class (the runs a strategy makes are strategies/runs.py's); reached
through ``mixbench.config``, the one public module."""

from __future__ import annotations

from dataclasses import dataclass

from mixbench import variants
from mixbench._stages import Stage
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
    resolved, kind = {"size": size, "steps": config["training"]["steps"]}, Stage.parse(stage).kind
    if kind == "final":
        return resolved
    if kind == "fit":  # computes weights from the runs before it; trains nothing
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
    if Stage.parse(stage).replica is None:
        return True
    return bool(stage_setting(config, name, stage, "save_model", False))


def stage_layers(config: dict, name: str, stage: str) -> list[dict]:
    """The config entries that set a stage: the global ``stages`` one, then the strategy's own."""
    kind = Stage.parse(stage).kind
    return [config["stages"].get(kind, {}), strategy_entry(config, name).get("stages", {}).get(kind, {})]


def stage_allows_larger(config: dict, name: str, stage: str) -> bool:
    """``allow_larger_than_final`` as the last entry that sets it says (the strategy's over the global one)."""
    settings = [layer["allow_larger_than_final"] for layer in stage_layers(config, name, stage)
                if layer.get("allow_larger_than_final") is not None]
    return bool(settings and settings[-1])


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
    kind = Stage.parse(stage).kind
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


def domain_cap(corpus: dict, domain: str) -> int:
    """The byte cap of one domain (``corpus.max_bytes_per_domain``: one number or one per domain)."""
    return keyed_value(corpus["max_bytes_per_domain"], domain, "corpus.max_bytes_per_domain", "cap for domain")
