"""The complete check of a configuration: ``mixbench.config``'s checks with those of the grid's
strategies, which need their classes: each strategy's implementation, hyperparameters and
signals, the sizes of its stages, and each of its runs against training (context length, batch
split, warmup). Only the strategies of the grid (``grid.strategies`` with the variants expanded)
are checked: an entry the grid does not use is never instantiated, so it may be out of date.
A strategy whose settings would never change its mixture (``Strategy.static_reason``) is refused
unless its entry sets ``allow_static: true``.

The workflow (rules/common.smk) and every entry point that trains, plans or reads a grid's runs
load their configuration with ``load`` here; each problem is one line starting with the field at
fault, and every problem found is said in one ConfigError (``mixbench.config.raise_problems``).
"""

from __future__ import annotations

from pathlib import Path

from mixbench import config as cfg
from mixbench import variants
from mixbench.errors import ConfigError
from mixbench.model_sizes import SIZES, non_embedding_parameters
from strategies import runs
from strategies.base import ALLOW_STATIC
from strategies.signal_names import SIGNALS


def load(*paths: str | Path, overrides: dict | None = None) -> dict:
    """``mixbench.config.load`` with the checks of the grid's strategies."""
    return validate(cfg.deep_merge(cfg.read_files(*paths), overrides or {}))


def validate(config: dict) -> dict:
    """``mixbench.config.validate`` with the checks of the grid's strategies, every problem found
    in one ConfigError."""
    return cfg.validate(config, strategy_problems=grid_problems)


def grid_problems(config: dict) -> list[str]:
    """What is wrong with the grid's strategies and their runs, in a config that passed the schema
    and whose sizes are all known."""
    problems, sound, said = [], [], set()
    swept = variants.variants(config)
    for name in config["grid"]["strategies"]:
        found = strategy_problems(config, name)
        if not found:
            sound.append(name)  # its stages can be resolved
        # A problem of a base entry is every variant's: say it once per entry.
        entry = swept[name].base if name in swept else name
        problems += [p for p in found if (entry, p.split(": ", 1)[-1]) not in said]
        said |= {(entry, p.split(": ", 1)[-1]) for p in found}
    for name in sound:
        problems += stage_problems(config, name)
    return (problems + run_problems(config, sound) + static_problems(config, sound)
            + landscape_problems(config, checked=config["grid"]["strategies"]))


def landscape_problems(config: dict, checked: list[str]) -> list[str]:
    """The landscape study's lattice entry (docs/landscape.md): a ``lattice`` strategy whose runs
    train at the grid's final size and steps, so that its mixtures compare with the final models."""
    if config.get("landscape") is None:
        return []
    from strategies.lattice import Lattice

    name = config["landscape"]["lattice"]
    if name not in checked:
        found = strategy_problems(config, name)
        if found:
            return found
        found = stage_problems(config, name) + run_problems(config, [name])
        if found:
            return found
    if not issubclass(runs.strategy_class(config, name), Lattice):
        return [f"landscape.lattice: {name!r} is strategy {runs.strategy_class(config, name).__name__}, not a lattice "
                f"(strategies/lattice.py)"]
    problems = []
    if not cfg.stage_saves_model(config, name, "swarm-0"):
        problems.append(f"strategies.{name}.stages.swarm: the study scores every lattice run's model on the test split: "
                        f"set save_model: true")
    for size in config["grid"]["sizes"]:
        final = runs.cell_runs(config, size, name)["final"]
        for stage, spec in runs.cell_runs(config, size, name).items():
            if cfg.Stage.parse(stage).replica == 0 and spec != final:
                problems.append(f"strategies.{name}.stages.swarm: the lattice's runs train at size {spec['size']!r} "
                                f"for {spec['steps']} steps; the study compares them with final models of size "
                                f"{size!r} trained for {final['steps']} steps: leave the swarm stage's size and steps "
                                f"unset")
    return problems


def strategy_problems(config: dict, name: str) -> list[str]:
    """A grid strategy's implementation, hyperparameters and signals."""
    where = cfg.where_strategy(config, name)
    try:
        cls = runs.strategy_class(config, name)
    except KeyError as exc:
        if where.startswith("grid.strategies"):
            return [f"grid.strategies: {exc.args[0]}; or the key of an entry strategies.{name} whose `strategy:` "
                    f"names one of them"]
        if where.startswith("strategies.") and "strategy" in cfg.strategy_entry(config, name):
            where = f"strategies.{name}.strategy"
        return [f"{where}: {exc.args[0]}"]
    hparams = cfg.strategy_hparams(config, name)
    try:
        cls.check_hparams(hparams, config["corpus"]["domains"])
        cls.check_training(hparams, config["training"], config["corpus"]["domains"])
    except ConfigError as exc:
        return [f"{where}: {exc}"]
    missing = sorted(set(cls.signals) - set(SIGNALS))
    if missing:
        return [f"{where}: strategy {name!r} needs signals no provider computes: {missing} "
                f"(strategies/signal_names.py lists {', '.join(sorted(SIGNALS))})"]
    return []


def stage_problems(config: dict, name: str) -> list[str]:
    """What is wrong with the sizes of a strategy's stages at any final size of the grid."""

    problems, who = [], cfg.where_strategy(config, name, prose=True)
    for final_size in config["grid"]["sizes"]:
        stage_runs = cfg.one_run_per_stage(runs.cell_runs(config, final_size, name))
        unknown = {stage: spec["size"] for stage, spec in stage_runs.items() if spec["size"] not in SIZES}
        if unknown:
            return list(dict.fromkeys(  # a swarm's runs said once
                f"{stage_field(config, name, stage, 'size')}: unknown size {size!r} (stage "
                f"{cfg.Stage.parse(stage).group!r} of {who}); known sizes: {sorted(SIZES)}"
                for stage, size in unknown.items()))
        sizes = {stage: spec["size"] for stage, spec in stage_runs.items()}
        if "reference" in sizes and "proxy" in sizes and sizes["reference"] != sizes["proxy"]:
            problems.append(f"{stage_field(config, name, 'proxy', 'size')}: the proxy must be the size of its "
                            f"reference model ({who}: reference {sizes['reference']!r} from "
                            f"{stage_field(config, name, 'reference', 'size')}, proxy {sizes['proxy']!r})")
        final_params = non_embedding_parameters(SIZES[final_size])
        cls, hparams = runs.strategy_class(config, name), runs.configured_hparams(config, name)
        for stage, spec in stage_runs.items():
            try:
                cls.check_stage_size(hparams, stage=stage, size=spec["size"], n_layer=SIZES[spec["size"]].n_layer)
            except ConfigError as exc:
                problems.append(f"{stage_field(config, name, stage, 'size')}: {exc}")
            params = non_embedding_parameters(SIZES[spec["size"]])
            if stage != "final" and params > final_params and not cfg.stage_allows_larger(config, name, stage):
                field = stage_field(config, name, stage, "size")
                key = field.rsplit(".", 1)[0] if field.endswith(".size") else f"stages.{cfg.Stage.parse(stage).kind}"
                problems.append(
                    f"{field}: {who}'s stage {cfg.Stage.parse(stage).group!r} uses size {spec['size']!r} "
                    f"({params:,} non-embedding "
                    f"parameters), larger than the final size {final_size!r} it feeds ({final_params:,}); if this "
                    f"is intended, set `allow_larger_than_final: true` in {key}")
    return list(dict.fromkeys(problems))  # the same problem at several final sizes is said once


def stage_field(config: dict, name: str, stage: str, field: str) -> str:
    """The field that sets a stage's ``size`` or ``steps``: the strategy's own stage entry (a
    variant's is its base's), the global ``stages`` one, or else what a stage without one takes
    (grid.sizes: the size of the run it feeds; training.steps)."""
    if stage == "final":
        return {"size": "grid.sizes", "steps": "training.steps"}[field]
    kind = cfg.Stage.parse(stage).kind
    glob, own = cfg.stage_layers(config, name, stage)
    swept = variants.variants(config)
    entry = swept[name].base if name in swept else name
    if own.get(field) is not None:
        return f"strategies.{entry}.stages.{kind}.{field}"
    if glob.get(field) is not None:
        return f"stages.{kind}.{field}"
    if field == "steps":
        return "training.steps"
    # The size of the run it feeds: the next run of another stage (a swarm run feeds no sibling).
    stages = runs.strategy_stages(config, name)
    fed = next(s for s in stages[stages.index(stage) + 1:] if not cfg.Stage.parse(stage).same_fan_out(s))
    return stage_field(config, name, fed, field)


def run_problems(config: dict, names: list[str]) -> list[str]:
    """Each run of the grid (final models, and the stages of ``names``) against training: the
    context of its size holds training.seq_len, its global batch splits into micro-batches, and
    it is longer than the warmup. Each problem is said once, with every run it concerns."""

    training = config["training"]
    by_size: dict[str, list[str]] = {size: ["grid.sizes"] for size in config["grid"]["sizes"]}
    by_steps: dict[tuple[int, str], list[str]] = {(training["steps"], "training.steps"): ["the final models"]}
    # (strategy, stage, size) of a run -> who it is; no stage entry sets a final model's resources.
    by_run: dict[tuple, str] = {(None, "final", size): "the final models" for size in config["grid"]["sizes"]}
    for size in config["grid"]["sizes"]:
        for name in names:
            for stage, spec in cfg.one_run_per_stage(runs.cell_runs(config, size, name)).items():
                if stage in ("fit", "final") or spec["size"] not in SIZES:  # an unknown size: stage_problems says so
                    continue
                who = f"{cfg.where_strategy(config, name, prose=True)}'s {cfg.Stage.parse(stage).group}"
                by_run[(name, stage, spec["size"])] = who
                by_size.setdefault(spec["size"], []).append(f"{stage_field(config, name, stage, 'size')} ({who})")
                by_steps.setdefault((spec["steps"], stage_field(config, name, stage, "steps")), []).append(who)
    problems = [f"training.seq_len: {training['seq_len']} exceeds size {size!r}'s context of "
                f"{SIZES[size].n_positions} tokens (mixbench/model_sizes.py), used by {', '.join(dict.fromkeys(users))}"
                for size, users in by_size.items() if training["seq_len"] > SIZES[size].n_positions]
    problems += batch_split_problems(config, by_run)
    problems += [f"training.warmup_steps: {training['warmup_steps']} is not below the {steps} steps ({field}) of "
                 f"{', '.join(dict.fromkeys(users))}"
                 for (steps, field), users in by_steps.items() if training["warmup_steps"] >= steps]
    return list(dict.fromkeys(p for p in problems if p))


def batch_split_problems(config: dict, run_users: dict[tuple, str]) -> list[str]:
    """Runs, {(strategy, stage, size): who}, whose global batch does not split into the
    micro-batches of every rank (cfg.run_resources), each problem said once with every run it
    concerns and the fields that set its numbers."""
    batch, problems, users = config["training"]["batch_size"], [], {}
    for (name, stage, size), who in run_users.items():
        try:
            resolved = {field: cfg.resource_setting(config, name, stage, size, field) for field in cfg.RESOURCE_FIELDS}
        except ConfigError as exc:  # a keyed field names neither the size nor a default
            problems.append(str(exc))
            continue
        settings = [resolved[field] for field in ("nodes", "processes", "micro_batch_size")]
        nodes, processes, micro = (value for value, _ in settings)
        if batch % (nodes * processes * micro):
            fields = ", ".join(field for _, field in settings)
            key = (f"training.batch_size: batch_size {batch} is not a multiple of nodes × processes × "
                   f"micro_batch_size at size {size!r} = {nodes} × {processes} × {micro} ({fields})")
            users.setdefault(key, []).append(who)
    return problems + [f"{key}, for {', '.join(dict.fromkeys(who))}" for key, who in users.items()]


def static_runs(config: dict, name: str) -> list[tuple[str, int, str]]:
    """(stage, steps, reason) of each run of a grid strategy that would never change its mixture
    (``Strategy.static_reason``), at any final size of the grid, whatever ``allow_static`` says. A
    run no longer than the warmup is left to run_problems."""
    cls = runs.strategy_class(config, name)
    hparams = runs.configured_hparams(config, name)
    warmup, domains = config["training"]["warmup_steps"], list(config["corpus"]["domains"])
    found = []
    for size in config["grid"]["sizes"]:
        for stage, spec in runs.cell_runs(config, size, name).items():
            fits = cfg.Stage.parse(stage).kind == "fit"
            if not fits and spec["steps"] <= warmup:
                continue
            reason = cls.static_reason(hparams, stage=stage, steps=spec["steps"], warmup_steps=warmup, domains=domains)
            if reason:
                found.append((stage, spec["steps"], reason))
    return list(dict.fromkeys(found))


def static_problems(config: dict, names: list[str]) -> list[str]:
    """The strategies of ``names`` that would never change their mixture and do not say
    ``allow_static: true``: one problem per reason, with the runs it concerns and both fixes."""
    problems, swept = [], variants.variants(config)
    for name in names:
        if cfg.strategy_hparams(config, name).get(ALLOW_STATIC):
            continue
        entry = swept[name].base if name in swept else name
        where = cfg.where_strategy(config, name)
        by_reason: dict[tuple[str, str], list[str]] = {}
        for stage, steps, reason in static_runs(config, name):
            length = "" if cfg.Stage.parse(stage).kind == "fit" else \
                f" ({steps} steps, {stage_field(config, name, stage, 'steps')})"
            by_reason.setdefault((reason, length), []).append(cfg.Stage.parse(stage).group)
        for (reason, length), stages in by_reason.items():
            named = list(dict.fromkeys(stages))  # e.g. DoReMi's rounds: proxy and proxy-r2
            runs_of = f"{' and '.join(named)} run{'s' if len(named) > 1 else ''} of {name!r}"
            problems.append(f"{where}: the {runs_of}{length} would never change its mixture: {reason}, "
                            f"or set `{ALLOW_STATIC}: true` in strategies.{entry} to run it anyway")
    return problems


def static_allowed(config: dict, name: str, stage: str) -> bool | None:
    """What a run's run.json records as ``allow_static``: True where ``allow_static: true`` let the
    strategy run settings that never change its mixture and the run depends on that setting (it is
    in the run's fingerprint: ``Strategy.stage_hparams``); None otherwise."""
    cls = runs.strategy_class(config, name)
    hparams = cls.stage_hparams(stage, runs.configured_hparams(config, name))
    return True if hparams.get(ALLOW_STATIC) and static_runs(config, name) else None
