"""Reading a configuration's fields: strategy entries, the size and steps of every stage, the
folder of every run, and settings given once or per size or domain. Functions of a config
dict, used by the validation (mixbench/config_checks.py) and by everything that runs the grid;
``mixbench.config`` re-exports them, so ``cfg.stage_training`` and the like work as before."""

from __future__ import annotations

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
    of their kind (``proxy``)."""
    resolved = {"size": size, "steps": config["training"]["steps"]}
    if stage == "final":
        return resolved
    for layer in stage_layers(config, name, stage):
        resolved.update({k: layer[k] for k in ("size", "steps") if layer.get(k) is not None})
    return resolved


def stage_layers(config: dict, name: str, stage: str) -> list[dict]:
    """The config entries that set a stage: the global ``stages`` one, then the strategy's own."""
    kind = stage.split("-r")[0]
    return [config["stages"].get(kind, {}), strategy_entry(config, name).get("stages", {}).get(kind, {})]


def stage_allows_larger(config: dict, name: str, stage: str) -> bool:
    """``allow_larger_than_final`` as the last entry that sets it says (the strategy's over the global one)."""
    settings = [layer["allow_larger_than_final"] for layer in stage_layers(config, name, stage)
                if layer.get("allow_larger_than_final") is not None]
    return bool(settings and settings[-1])


def strategy_stages(config: dict, name: str) -> tuple[str, ...]:
    """The stages a configured strategy runs, from its class's declaration (torch-free)."""
    from strategies import get_strategy_class

    cls = get_strategy_class(strategy_class_name(config, name))
    return tuple(cls.stages_for({**cls.defaults, **strategy_hparams(config, name)}))


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
    """{stage: {"size", "steps"}} of one run at its own ``size`` and of every run it reads."""
    stages = strategy_stages(config, name)
    if stage not in stages:
        raise ConfigError(f"strategy {name!r} has no stage {stage!r}; its stages: {stages}")
    return resolve_stages(config, name, stages[: stages.index(stage) + 1], size)


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
    """The micro-batch of a run of model size ``size``."""
    return keyed_value(training["micro_batch_size"], size, "training.micro_batch_size", "micro-batch for size")


def domain_cap(corpus: dict, domain: str) -> int:
    """The byte cap of one domain (``corpus.max_bytes_per_domain``: one number or one per domain)."""
    return keyed_value(corpus["max_bytes_per_domain"], domain, "corpus.max_bytes_per_domain", "cap for domain")
