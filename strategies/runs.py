"""A grid's runs as its strategies declare them: the runs a configured strategy makes, the runs
a run reads, every run of the grid, and what a run's result depends on. Everything that needs a
strategy class to read a configuration lives here, one layer above mixbench/config.py (which
needs none); strategies/grid_config.py checks a grid's strategies with it.
"""

from __future__ import annotations

from dataclasses import replace

from mixbench import config as cfg
from mixbench.errors import ConfigError
from strategies import get_strategy_class
from strategies.base import Strategy


def strategy_class(config: dict, name: str) -> type[Strategy]:
    """The class of a grid strategy name (its entry's ``strategy:``, else the name itself)."""
    return get_strategy_class(cfg.strategy_class_name(config, name))


def configured_hparams(config: dict, name: str) -> dict:
    """A grid strategy's hyperparameters, its class's defaults filled in."""
    return {**strategy_class(config, name).defaults, **cfg.strategy_hparams(config, name)}


def strategy_input_files(config: dict, name: str) -> list[str]:
    """Files the strategy's fit reads besides runs (``Strategy.input_files``: RegMix's swarm_files)."""
    return strategy_class(config, name).input_files(configured_hparams(config, name))


def strategy_stages(config: dict, name: str) -> tuple[str, ...]:
    """The runs a configured strategy makes per seed, in order, from its class's declaration
    (torch-free): its stages, each fan-out stage as its N runs ``swarm-0 … swarm-{N-1}``."""
    cls = strategy_class(config, name)
    hparams = configured_hparams(config, name)
    replicas = cls.replicas_for(hparams, list(config["corpus"]["domains"]))
    return tuple(str(replace(cfg.Stage.parse(stage), replica=index)) if stage in replicas else stage
                 for stage in cls.stages_for(hparams) for index in range(replicas.get(stage, 1)))


def pack_of(config: dict, name: str, stage: str) -> tuple[str, ...]:
    """The runs one job trains with ``stage``: the run alone, or for a run of a fan-out stage with
    ``pack`` P, its pack of P consecutive runs (swarm-0 … swarm-{P-1}, swarm-P …; the last pack
    of a swarm holds the rest)."""
    pack, index = cfg.stage_pack(config, name, stage), cfg.Stage.parse(stage).replica
    if index is None or pack == 1:
        return (stage,)
    group = cfg.Stage.parse(stage).group
    runs = [s for s in strategy_stages(config, name) if cfg.Stage.parse(s).group == group]
    if stage not in runs:
        raise ConfigError(f"strategy {name!r} has no run {stage!r}; its runs: {cfg.describe_stages(runs)}")
    first = index - index % pack
    return tuple(runs[first:first + pack])


def run_chain(config: dict, name: str, stage: str, size: str) -> dict[str, dict]:
    """{stage: {"size", "steps"}} of one run at its own ``size`` and of every run it reads: every
    run before it, except that the runs of a fan-out stage read none of each other."""
    stages = strategy_stages(config, name)
    if stage not in stages:
        raise ConfigError(f"strategy {name!r} has no stage {stage!r}; its runs: {cfg.describe_stages(stages)}")
    own = cfg.Stage.parse(stage)
    before = tuple(s for s in stages[: stages.index(stage)] if not own.same_fan_out(s))
    return cfg.resolve_stages(config, name, (*before, stage), size)


def cell_runs(config: dict, size: str, name: str) -> dict[str, dict]:
    """Every run a final model of the grid needs, {stage: {"size", "steps"}}, in stage order."""
    return cfg.resolve_stages(config, name, strategy_stages(config, name), size)


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


def lattice_stages(config: dict, name: str) -> list[str]:
    """The runs of entry ``name``'s swarm, swarm-0 … swarm-{P-1}: one per lattice point, in order."""
    return [stage for stage in strategy_stages(config, name) if cfg.Stage.parse(stage).replica is not None]


def landscape_runs(config: dict) -> list[tuple[str, int, int, str, str]]:
    """(size, seed, point, stage, folder) of every run of the landscape study's lattice (the
    swarm of the ``landscape.lattice`` entry, at each final size and seed), in that order; [] in a
    grid without the study. What the scoring rule, the finished-file check and the tables read."""
    if config.get("landscape") is None:
        return []
    name = config["landscape"]["lattice"]
    return [(size, seed, point, stage, cfg.run_dir(config, size, name, seed, stage))
            for size in config["grid"]["sizes"] for seed in config["grid"]["seeds"]
            for point, stage in enumerate(lattice_stages(config, name))]


def grid_run_resources(config: dict) -> dict[tuple[str, str, str], cfg.RunResources]:
    """{(strategy, stage, size): resources} of every run the grid trains, a fan-out stage's runs as
    their first (they share their resources)."""
    return {(name, stage, size): cfg.run_resources(config, name, stage, size)
            for (size, name, stage) in grid_runs(config)
            if stage != "fit" and cfg.Stage.parse(stage).replica in (None, 0)}


def run_fingerprint(config: dict, strategy: str, chain: dict[str, dict]) -> str:
    """What one training run's result depends on, given its chain from ``run_chain``: the
    resolved ``{"size", "steps"}`` of the run (last) and of every run it reads (seed and stage
    come from its path). A stage's own size and steps stand in for the grid's, so changing the
    final models' length reruns no shared proxy; a changed upstream run changes the fingerprint,
    so no checkpoint made on the old one is resumed. Of the hyperparameters, those the run's stage
    depends on (``Strategy.stage_hparams``: a RegMix swarm run, its concentration range alone)."""
    corpus, tokenizer, training = cfg.relevant_sections(config, "corpus", "tokenizer", "training")
    # The hyperparameters with their defaults: writing a default out changes no run.
    cls = strategy_class(config, strategy)
    *_, (stage, own) = chain.items()
    hparams = cls.stage_hparams(stage, configured_hparams(config, strategy))
    entry = {"strategy": cls.__name__, **hparams}
    return cfg.fingerprint([corpus, tokenizer, {**training, "steps": own["steps"]}, chain, entry])
