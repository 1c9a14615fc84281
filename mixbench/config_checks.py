"""The checks of a configuration beyond what its JSON schema says (``mixbench.config.validate``
runs them around the schema): raw values no schema sees (keys that are not text, NaN), the
schema's own errors told from the field at fault, strategy names and hyperparameters against
the registry, model sizes against the size table, the context length of every size a run uses,
batch divisibility, per-domain caps.

Each function returns problems, one line each, starting with the field at fault as a dotted
path (``training.seq_len: ...``); ``config.raise_problems`` turns them into one ConfigError.
Only the strategies of the grid (``grid.strategies`` with the variants expanded) are checked:
an entry the grid does not use is never instantiated, so it may be out of date.
"""

from __future__ import annotations

import math

import jsonschema

from mixbench import config_fields as cfg
from mixbench import variants
from mixbench.errors import ConfigError
from mixbench.model_sizes import SIZES, non_embedding_parameters


def value_problems(config) -> list[str]:
    """Values of the raw config that no field takes, wherever they are: the schema cannot tell
    NaN or infinity from a number, and code reading the config assumes text keys."""
    if not isinstance(config, dict):
        return [f"(top level): a config is a mapping of sections, got {type(config).__name__}"]
    problems = []
    if "base" in config:
        problems.append("base: names a config file to layer under the file it is in, and is only read from config "
                        "files (--configfile, mixbench.config.load); this config arrived as a mapping, so nothing "
                        f"was layered under it ({config['base']!r})")

    def walk(value, path: tuple, open_containers: frozenset):
        if isinstance(value, (dict, list)):
            if id(value) in open_containers:  # YAML anchors can build a list that contains itself
                problems.append(f"{cfg.where(path)}: contains itself (a YAML alias of an enclosing node)")
                return
            inner = open_containers | {id(value)}
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(value, dict) and not isinstance(key, str):
                    problems.append(f"{cfg.where((*path, key))}: a key must be text, got {type(key).__name__} "
                                    f"{key!r} (YAML reads 1:, true: or null: as a number, boolean or null: quote it)")
                    continue
                walk(item, (*path, key), inner)
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{cfg.where(path)}: {value} is not a finite number")

    walk(config, (), frozenset())
    return problems


def schema_problems(error: jsonschema.ValidationError) -> list[str]:
    """What a schema error says, starting with the field it is about (not only its parent)."""
    field = cfg.where(error.path)
    if error.validator == "required":
        schema_of = error.schema.get("properties", {})
        return [f"{cfg.where([*error.path, name])}: required, and it has no default"
                + (f" ({schema_of[name]['description']})" if "description" in schema_of.get(name, {}) else "")
                for name in error.validator_value if name not in error.instance]
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = ", ".join(error.schema.get("properties", {}))
        parent = field if error.path else "the top level"
        return [f"{cfg.where([*error.path, name])}: unknown field; {parent} takes {known}"
                for name in error.instance if name not in error.schema.get("properties", {})]
    if "propertyNames" in error.schema_path:  # the instance is the key itself
        return [f"{cfg.where([*error.path, error.instance])}: {error.message}"]
    if error.validator in ("oneOf", "anyOf") and error.context:
        # The deepest reason: for {small: "x"} where a number or a mapping of numbers is expected,
        # that "x" is not a number, not that the mapping is not a number.
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        return [f"{cfg.where(deepest.absolute_path)}: {deepest.message}{_hint(deepest)}"]
    return [f"{field}: {error.message}{_hint(error)}"]


def _hint(error: jsonschema.ValidationError) -> str:
    """What usually causes an error, where it is not the error itself."""
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    if error.validator == "type" and _numeric_text(error.instance) and {"integer", "number"} & set(expected):
        return (" (snakemake --config passes the values nested in a mapping as text, never as numbers: "
                "set them in a config file given to --configfiles instead)")
    return ""


def _numeric_text(value) -> bool:
    """Text that reads as a number, as `snakemake --config` passes the numbers inside a mapping."""
    if not isinstance(value, str):
        return False
    try:
        float(value)
    except ValueError:
        return False
    return True


def overlay_problem(config: dict) -> str | None:
    """An overlay (config/rehearsal.yaml) loaded without the grid it adjusts."""
    overlay_of, name = config.get("overlay_of"), config.get("name")
    if isinstance(overlay_of, str) and overlay_of != name:
        return (f"overlay_of: this config is an overlay of the {overlay_of!r} grid, which was not loaded (grid name: "
                f"{name!r}); pass both files to one flag, e.g. `snakemake --configfiles config/paper.yaml "
                f"config/rehearsal.yaml` (a second --configfile flag replaces the first)")
    return None


def semantic_problems(config: dict) -> list[str]:
    """Everything wrong with a schema-valid config with its variants expanded."""

    unknown_sizes = [s for s in config["grid"]["sizes"] if s not in SIZES]
    if unknown_sizes:  # every check below reads the size table
        return [f"grid.sizes: unknown size(s) {unknown_sizes}; known sizes: {sorted(SIZES)}"]
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
    problems += fan_out_field_problems(config)
    problems += run_problems(config, sound)
    corpus = config["corpus"]
    if corpus["source"] == "debian":
        from corpus.debian import DOMAINS

        unknown = [d for d in corpus["domains"] if d not in DOMAINS]
        if unknown:
            problems.append(f"corpus.domains: {unknown} are not Debian corpus domains; valid: {', '.join(DOMAINS)}")
    problems += corpus_problems(corpus)
    for field in cfg.RESOURCE_FIELDS:  # one value per size, or one for all
        unsized = sorted(set(cfg.keyed_values(config["training"][field])) - {"default"} - set(SIZES))
        if unsized:
            problems.append(f"training.{field}: unknown size(s) {unsized}; known sizes: {sorted(SIZES)}")
    downstream = config["downstream"]
    if any(t.startswith("mixbench_") for t in downstream["tasks"]):
        for size in config["grid"]["sizes"]:
            if downstream["continuation_chars"] >= SIZES[size].n_positions:
                problems.append(f"downstream.continuation_chars: {downstream['continuation_chars']} must be below "
                                f"size {size!r}'s context of {SIZES[size].n_positions} tokens (grid.sizes)")
    return problems


def where_strategy(config: dict, name: str, prose: bool = False) -> str:
    """Where a grid strategy is configured: its entry; for a variant, its sweep and the base entry
    it copies; for a registered name without an entry, grid.strategies (in ``prose``, the name)."""
    swept = variants.variants(config)
    if name in swept:
        base = swept[name].base
        return f"grid.variants.{base} ({name}" + (f" over strategies.{base})" if base in config["strategies"] else ")")
    if name in config["strategies"]:
        return f"strategies.{name}"
    return name if prose else f"grid.strategies ({name})"


def strategy_problems(config: dict, name: str) -> list[str]:
    """A grid strategy's implementation, hyperparameters and signals."""
    from models.signals import available as available_signals
    from strategies import get_strategy_class

    where = where_strategy(config, name)
    try:
        cls = get_strategy_class(cfg.strategy_class_name(config, name))
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
    missing = sorted(set(cls.signals) - set(available_signals()))
    if missing:
        return [f"{where}: strategy {name!r} needs signals no provider computes: {missing} "
                f"(models/signals/__init__.py lists {', '.join(available_signals())})"]
    return []


def stage_problems(config: dict, name: str) -> list[str]:
    """What is wrong with the sizes of a strategy's stages at any final size of the grid."""

    problems, who = [], where_strategy(config, name, prose=True)
    for final_size in config["grid"]["sizes"]:
        runs = cfg.one_run_per_stage(cfg.cell_runs(config, final_size, name))
        unknown = {stage: spec["size"] for stage, spec in runs.items() if spec["size"] not in SIZES}
        if unknown:
            return list(dict.fromkeys(  # a swarm's runs said once
                f"{stage_field(config, name, stage, 'size')}: unknown size {size!r} (stage "
                f"{cfg.stage_group(stage)!r} of {who}); known sizes: {sorted(SIZES)}"
                for stage, size in unknown.items()))
        if "reference" in runs and "proxy" in runs and runs["reference"]["size"] != runs["proxy"]["size"]:
            problems.append(f"{stage_field(config, name, 'proxy', 'size')}: the proxy must be the size of its "
                            f"reference model ({who}: reference {runs['reference']['size']!r} from "
                            f"{stage_field(config, name, 'reference', 'size')}, proxy {runs['proxy']['size']!r})")
        final_params = non_embedding_parameters(SIZES[final_size])
        for stage, spec in runs.items():
            params = non_embedding_parameters(SIZES[spec["size"]])
            if stage != "final" and params > final_params and not cfg.stage_allows_larger(config, name, stage):
                field = stage_field(config, name, stage, "size")
                key = field.rsplit(".", 1)[0] if field.endswith(".size") else f"stages.{cfg.stage_kind(stage)}"
                problems.append(
                    f"{field}: {who}'s stage {cfg.stage_group(stage)!r} uses size {spec['size']!r} "
                    f"({params:,} non-embedding "
                    f"parameters), larger than the final size {final_size!r} it feeds ({final_params:,}); if this "
                    f"is intended, set `allow_larger_than_final: true` in {key}")
    return list(dict.fromkeys(problems))  # the same problem at several final sizes is said once


FAN_OUT_FIELDS = ("pack", "save_model")  # settings of a fan-out stage's runs (cfg.stage_pack, stage_saves_model)


def fan_out_field_problems(config: dict) -> list[str]:
    """``pack`` and ``save_model`` set on a stage that does not fan out (only ``swarm`` does)."""
    entries = {"stages": config["stages"], **{f"strategies.{name}.stages": entry.get("stages") or {}
                                              for name, entry in config["strategies"].items()}}
    return [f"{where}.{kind}.{field}: `{field}` applies to the runs of a fan-out stage (swarm) only, not to {kind!r}"
            for where, stages in entries.items() for kind, layer in stages.items()
            for field in FAN_OUT_FIELDS if kind != "swarm" and layer.get(field) is not None]


def stage_field(config: dict, name: str, stage: str, field: str) -> str:
    """The field that sets a stage's ``size`` or ``steps``: the strategy's own stage entry (a
    variant's is its base's), the global ``stages`` one, or else what a stage without one takes
    (grid.sizes: the size of the run it feeds; training.steps)."""
    if stage == "final":
        return {"size": "grid.sizes", "steps": "training.steps"}[field]
    kind = cfg.stage_kind(stage)
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
    stages = cfg.strategy_stages(config, name)
    fed = next(s for s in stages[stages.index(stage) + 1:] if not cfg.same_fan_out(stage, s))
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
            for stage, spec in cfg.one_run_per_stage(cfg.cell_runs(config, size, name)).items():
                if stage in ("fit", "final") or spec["size"] not in SIZES:  # an unknown size: stage_problems says so
                    continue
                who = f"{where_strategy(config, name, prose=True)}'s {cfg.stage_group(stage)}"
                by_run[(name, stage, spec["size"])] = who
                by_size.setdefault(spec["size"], []).append(f"{stage_field(config, name, stage, 'size')} ({who})")
                by_steps.setdefault((spec["steps"], stage_field(config, name, stage, "steps")), []).append(who)
    problems = [f"training.seq_len: {training['seq_len']} exceeds size {size!r}'s context of "
                f"{SIZES[size].n_positions} tokens (models/sizes.py), used by {', '.join(dict.fromkeys(users))}"
                for size, users in by_size.items() if training["seq_len"] > SIZES[size].n_positions]
    problems += batch_split_problems(config, by_run)
    problems += [f"training.warmup_steps: {training['warmup_steps']} is not below the {steps} steps ({field}) of "
                 f"{', '.join(dict.fromkeys(users))}"
                 for (steps, field), users in by_steps.items() if training["warmup_steps"] >= steps]
    return list(dict.fromkeys(p for p in problems if p))


def corpus_problems(corpus: dict) -> list[str]:
    """Per-domain caps that name no configured domain, or leave one without a cap."""
    caps = cfg.keyed_values(corpus["max_bytes_per_domain"])
    problems = [f"corpus.max_bytes_per_domain: names {name!r}, which is not in corpus.domains {corpus['domains']}"
                for name in caps if name != "default" and name not in corpus["domains"]]
    if "default" not in caps:
        uncapped = [d for d in corpus["domains"] if d not in caps]
        if uncapped:
            problems.append(f"corpus.max_bytes_per_domain: no cap for {uncapped} and no `default` "
                            f"(corpus.domains: {corpus['domains']})")
    return problems


def batch_split_problems(config: dict, runs: dict[tuple, str]) -> list[str]:
    """Runs, {(strategy, stage, size): who}, whose global batch does not split into the
    micro-batches of every rank (cfg.run_resources), each problem said once with every run it
    concerns and the fields that set its numbers."""
    batch, problems, users = config["training"]["batch_size"], [], {}
    for (name, stage, size), who in runs.items():
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
