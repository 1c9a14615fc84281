"""Load and validate a mixbench configuration.

One code path for Snakemake (rules/common.smk) and for every ``python -m`` entry point:
the JSON schema in rules/schemas/config.schema.yaml checks structure and fills defaults,
then ``check_semantics`` checks what a schema cannot: strategy names and hyperparameters
against the registry, model sizes against the size table, batch divisibility.
"""

from __future__ import annotations

import copy
import hashlib
import json
from pathlib import Path

import jsonschema
import yaml

from mixbench import variants
from mixbench.errors import ConfigError

from mixbench import REPO_ROOT
SCHEMA_PATH = REPO_ROOT / "rules" / "schemas" / "config.schema.yaml"
RESERVED_STRATEGY_KEYS = variants.RESERVED
# Fields that change how a job runs but not what it computes, beyond the order of floating-point
# operations: changing them reruns no finished job and does not invalidate a checkpoint. The
# number of processes is one of them because every step's data is the same for any number
# (corpus/sampler.py); the device because a model trained on a CPU is not retrained on a GPU.
OPERATIONAL_FIELDS = {
    "training": ("threads", "checkpoint_every", "log_flush_steps", "log_flush_seconds", "tensorboard", "eval_every",
                 "reweighted_step",
                 "processes", "nodes", "device", "compile", "micro_batch_size", "peak_tflops"),
    "evaluation": ("batch_size",),
    "tokenizer": ("workers",),
}


def _with_defaults(validator_class):
    """A validator that also fills in each property's ``default`` (jsonschema leaves them out)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


def validate(config: dict) -> dict:
    """Return a validated copy of ``config`` with defaults filled in; raise ConfigError otherwise."""
    config = copy.deepcopy(config)
    errors = sorted(_Validator(load_schema()).iter_errors(config), key=lambda e: list(e.path))
    if errors:
        lines = [f"  - {_where(e)}: {e.message}{_hint(e)}" for e in errors]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    config = variants.expand(config)
    check_semantics(config)
    return config


def _hint(error: jsonschema.ValidationError) -> str:
    """What usually causes an error, where it is not the error itself."""
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    if error.validator == "type" and isinstance(error.instance, str) and {"integer", "number"} & set(expected):
        return (" (snakemake --config passes the values nested in a mapping as text, never as numbers: "
                "set them in a config file given to --configfiles instead)")
    return ""


def _where(error: jsonschema.ValidationError) -> str:
    return ".".join(str(p) for p in error.path) or "(top level)"


def load(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Read YAML files in order (later ones win, key by key) plus overrides, then validate."""
    merged: dict = {}
    for path in paths:
        path = Path(path)
        if not path.exists():
            raise ConfigError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            merged = deep_merge(merged, yaml.safe_load(f) or {})
    return validate(deep_merge(merged, overrides or {}))


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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


def stage_key(config: dict, name: str, stage: str) -> str:
    """The config entry that sets a stage's size: the strategy's own if it has one, else the global one."""
    kind = stage.split("-r")[0]
    _, own = stage_layers(config, name, stage)
    return f"strategies.{name}.stages.{kind}" if own.get("size") is not None else f"stages.{kind}"


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


def check_semantics(config: dict) -> None:
    # Imported here: the registry and size table are light, but keep config importable alone.
    from models.signals import available as available_signals
    from models.sizes import SIZES
    from strategies import get_strategy_class

    if config["overlay_of"] is not None and config["overlay_of"] != config["name"]:
        raise ConfigError(
            f"this config is an overlay of the {config['overlay_of']!r} grid, which was not loaded (grid name: "
            f"{config['name']!r}); pass both files to one flag, e.g. `snakemake --configfiles config/paper.yaml "
            f"config/rehearsal.yaml` (a second --configfile flag replaces the first)")
    problems = []
    unknown_sizes = [s for s in config["grid"]["sizes"] if s not in SIZES]
    if unknown_sizes:
        raise ConfigError(f"invalid configuration:\n  - grid.sizes: unknown size(s) {unknown_sizes}; "
                          f"known sizes: {sorted(SIZES)}")
    # Entries outside the grid are checked too: a typo there should not wait until it is used.
    names = list(dict.fromkeys([*config["grid"]["strategies"], *config["strategies"]]))
    swept = variants.variants(config)
    for name in names:
        # A variant's problem is the sweep's: say where it was written.
        where = f"grid.variants.{swept[name].base} ({name})" if name in swept else f"strategies.{name}"
        try:
            cls = get_strategy_class(strategy_class_name(config, name))
        except KeyError as exc:
            problems.append(f"{where if name in swept else f'strategy {name!r}'}: {exc.args[0]}")
            continue
        try:
            cls.check_hparams(strategy_hparams(config, name), config["corpus"]["domains"])
            cls.check_training(strategy_hparams(config, name), config["training"], config["corpus"]["domains"])
        except ConfigError as exc:
            problems.append(f"{where}: {exc}")
            continue
        missing_signals = sorted(set(cls.signals) - set(available_signals()))
        if missing_signals:
            problems.append(f"{where if name in swept else f'strategy {name!r}'} needs signals no provider computes: "
                            f"{missing_signals} "
                            f"(models/signals/__init__.py lists {', '.join(available_signals())})")
        problems += [p.replace(f"strategies.{name}:", f"{where}:", 1) for p in stage_problems(config, name)]
    if config["corpus"]["source"] == "debian":
        from corpus.debian import DOMAINS

        unknown = [d for d in config["corpus"]["domains"] if d not in DOMAINS]
        if unknown:
            problems.append(f"corpus.domains: {unknown} are not Debian corpus domains; valid: {', '.join(DOMAINS)}")
    problems += corpus_problems(config["corpus"])
    unsized = sorted(set(micro_batch_sizes(config["training"])) - {"default"} - set(SIZES))
    if unsized:
        problems.append(f"training.micro_batch_size: unknown size(s) {unsized}; known sizes: {sorted(SIZES)}")
    downstream = config["downstream"]
    if any(t.startswith("mixbench_") for t in downstream["tasks"]):
        for size in config["grid"]["sizes"]:
            if size in SIZES and downstream["continuation_chars"] >= SIZES[size].n_positions:
                problems.append(f"downstream.continuation_chars ({downstream['continuation_chars']}) must be below "
                                f"size {size!r}'s context of {SIZES[size].n_positions} tokens")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def keyed_values(value) -> dict:
    """A setting given as one value for all, or as {name: value, default: value}, as a mapping."""
    return dict(value) if isinstance(value, dict) else {"default": value}


def keyed_value(value, name: str, setting: str, what: str):
    """The value of a one-or-per-name setting for ``name``: its own entry, else ``default``.
    ``what`` says what is missing, e.g. "micro-batch for size"."""
    values = keyed_values(value)
    if name not in values and "default" not in values:
        raise ConfigError(f"{setting} names no {what} {name!r} and has no `default` (it has {values})")
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


def corpus_problems(corpus: dict) -> list[str]:
    """Per-domain caps that name no configured domain, or leave one without a cap."""
    caps = keyed_values(corpus["max_bytes_per_domain"])
    problems = [f"corpus.max_bytes_per_domain names {name!r}, which is not in corpus.domains {corpus['domains']}"
                for name in caps if name != "default" and name not in corpus["domains"]]
    if "default" not in caps:
        uncapped = [d for d in corpus["domains"] if d not in caps]
        if uncapped:
            problems.append(f"corpus.max_bytes_per_domain has no cap for {uncapped} and no `default`")
    return problems


def batch_split_problem(training: dict, size: str) -> str | None:
    """Why the global batch does not split into the micro-batches of every rank at ``size``, if it does not."""
    try:
        micro = micro_batch_size(training, size)
    except ConfigError as exc:
        return str(exc)
    ranks = training["nodes"] * training["processes"]
    if training["batch_size"] % (ranks * micro):
        return (f"training: batch_size {training['batch_size']} is not a multiple of nodes × processes × "
                f"micro_batch_size at size {size!r} = {training['nodes']} × {training['processes']} × {micro}")
    return None


def stage_problems(config: dict, name: str) -> list[str]:
    """What is wrong with a strategy's stages at any final size of the grid."""
    from models.sizes import SIZES, non_embedding_parameters

    problems = []
    for final_size in config["grid"]["sizes"]:
        runs = cell_runs(config, final_size, name)
        unknown = {stage: spec["size"] for stage, spec in runs.items() if spec["size"] not in SIZES}
        if unknown:
            return [f"strategies.{name}: stage(s) use unknown size(s) {unknown}; known sizes: {sorted(SIZES)}"]
        if "reference" in runs and "proxy" in runs and runs["reference"]["size"] != runs["proxy"]["size"]:
            problems.append(f"strategies.{name}: the proxy must be the size of its reference model, got "
                            f"reference {runs['reference']['size']!r} and proxy {runs['proxy']['size']!r}")
        final_params = non_embedding_parameters(SIZES[final_size])
        for stage, spec in runs.items():
            split = batch_split_problem(config["training"], spec["size"])
            if split:
                problems.append(split)
            if config["training"]["warmup_steps"] >= spec["steps"]:
                problems.append(f"strategies.{name}: stage {stage!r} has {spec['steps']} steps, not more than "
                                f"training.warmup_steps ({config['training']['warmup_steps']})")
            params = non_embedding_parameters(SIZES[spec["size"]])
            allowed = stage_allows_larger(config, name, stage)
            if stage != "final" and params > final_params and not allowed:
                problems.append(
                    f"strategies.{name}: stage {stage!r} uses size {spec['size']!r} ({params:,} non-embedding "
                    f"parameters), larger than the final size {final_size!r} it feeds ({final_params:,}); if this "
                    f"is intended, set `allow_larger_than_final: true` in {stage_key(config, name, stage)}")
    return list(dict.fromkeys(problems))  # the same problem at several final sizes is said once


def relevant_sections(config: dict, *sections: str) -> list:
    """The named config sections without their operational fields."""
    return [
        {k: v for k, v in config[s].items() if k not in OPERATIONAL_FIELDS.get(s, ())}
        if isinstance(config.get(s), dict) else config.get(s)
        for s in sections
    ]


def fingerprint(obj) -> str:
    """Short stable hash of any JSON-serialisable object."""
    blob = json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def run_fingerprint(config: dict, strategy: str, chain: dict[str, dict]) -> str:
    """What one training run's result depends on, given its chain from ``resolve_stages``: the
    resolved ``{"size", "steps"}`` of the run (last) and of every run it reads (seed and stage
    come from its path). A stage's own size and steps stand in for the grid's, so changing the
    final models' length reruns no shared proxy; a changed upstream run changes the fingerprint,
    so no checkpoint made on the old one is resumed."""
    corpus, tokenizer, training = relevant_sections(config, "corpus", "tokenizer", "training")
    entry = {k: v for k, v in strategy_entry(config, strategy).items() if k != "stages"}
    *_, own = chain.values()
    return fingerprint([corpus, tokenizer, {**training, "steps": own["steps"]}, chain, entry])


def config_hash(config: dict) -> str:
    """Short stable hash of the validated config, recorded with every result row."""
    return fingerprint(config)
