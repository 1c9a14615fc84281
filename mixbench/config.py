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
from typing import Any

import jsonschema
import yaml

from mixbench.errors import ConfigError

from mixbench import REPO_ROOT
SCHEMA_PATH = REPO_ROOT / "rules" / "schemas" / "config.schema.yaml"
RESERVED_STRATEGY_KEYS = ("strategy", "stages")
# Fields that change how a job runs but not what it computes: changing them reruns nothing
# and does not invalidate a checkpoint.
OPERATIONAL_FIELDS = {"training": ("threads", "checkpoint_every", "reweighted_step"), "evaluation": ("batch_size",)}


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
        lines = [f"  - {_where(e)}: {e.message}" for e in errors]
        raise ConfigError("invalid configuration:\n" + "\n".join(lines))
    check_semantics(config)
    return config


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
    """Size and step count of one stage of one strategy (`final` always uses the grid's).
    Iterated stages (``proxy-r2``) take the settings of their kind (``proxy``)."""
    resolved = {"size": size, "steps": config["training"]["steps"]}
    if stage == "final":
        return resolved
    kind = stage.split("-r")[0]
    for layer in (config["stages"].get(kind, {}), strategy_entry(config, name).get("stages", {}).get(kind, {})):
        resolved.update({k: v for k, v in layer.items() if v is not None})
    return resolved


def check_semantics(config: dict) -> None:
    # Imported here: the registry and size table are light, but keep config importable alone.
    from models.signals import available as available_signals
    from models.sizes import SIZES
    from strategies import get_strategy_class

    problems = []
    # Entries outside the grid are checked too: a typo there should not wait until it is used.
    names = list(dict.fromkeys([*config["grid"]["strategies"], *config["strategies"]]))
    for name in names:
        try:
            cls = get_strategy_class(strategy_class_name(config, name))
        except KeyError as exc:
            problems.append(f"strategy {name!r}: {exc.args[0]}")
            continue
        try:
            cls.check_hparams(strategy_hparams(config, name), config["corpus"]["domains"])
            cls.check_training(strategy_hparams(config, name), config["training"], config["corpus"]["domains"])
        except ConfigError as exc:
            problems.append(f"strategies.{name}: {exc}")
            continue
        missing_signals = sorted(set(cls.signals) - set(available_signals()))
        if missing_signals:
            problems.append(f"strategy {name!r} needs signals no provider computes: {missing_signals} "
                            f"(models/signals/__init__.py lists {', '.join(available_signals())})")
        stages = cls.stages_for({**cls.defaults, **strategy_hparams(config, name)})
        if "reference" in stages and "proxy" in stages:
            sizes = {s: stage_training(config, name, s, config["grid"]["sizes"][0])["size"] for s in ("reference", "proxy")}
            if sizes["reference"] != sizes["proxy"]:
                problems.append(f"strategies.{name}: the proxy must be the size of its reference model, got {sizes}")
        for stage in stages:
            spec = stage_training(config, name, stage, config["grid"]["sizes"][0])
            if spec["size"] not in SIZES:
                problems.append(f"strategies.{name}: stage {stage!r} uses unknown size {spec['size']!r}")
            if config["training"]["warmup_steps"] >= spec["steps"]:
                problems.append(f"strategies.{name}: stage {stage!r} has {spec['steps']} steps, not more than "
                                f"training.warmup_steps ({config['training']['warmup_steps']})")
    unknown_sizes = [s for s in config["grid"]["sizes"] if s not in SIZES]
    if unknown_sizes:
        problems.append(f"grid.sizes: unknown size(s) {unknown_sizes}; known sizes: {sorted(SIZES)}")
    if config["corpus"]["source"] == "debian":
        from corpus.debian import DOMAINS

        unknown = [d for d in config["corpus"]["domains"] if d not in DOMAINS]
        if unknown:
            problems.append(f"corpus.domains: {unknown} are not Debian corpus domains; valid: {', '.join(DOMAINS)}")
    training = config["training"]
    per_step = training["processes"] * training["micro_batch_size"]
    if training["batch_size"] % per_step:
        problems.append(
            f"training: batch_size {training['batch_size']} is not a multiple of processes × micro_batch_size "
            f"= {training['processes']} × {training['micro_batch_size']}"
        )
    downstream = config["downstream"]
    if any(t.startswith("mixbench_") for t in downstream["tasks"]):
        for size in config["grid"]["sizes"]:
            if size in SIZES and downstream["continuation_chars"] >= SIZES[size].n_positions:
                problems.append(f"downstream.continuation_chars ({downstream['continuation_chars']}) must be below "
                                f"size {size!r}'s context of {SIZES[size].n_positions} tokens")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


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


def run_fingerprint(config: dict, strategy: str) -> str:
    """What a training run's result depends on (seed, size and stage come from its path)."""
    return fingerprint([relevant_sections(config, "corpus", "tokenizer", "training", "stages"),
                        strategy_entry(config, strategy)])


def config_hash(config: dict) -> str:
    """Short stable hash of the validated config, recorded with every result row."""
    return fingerprint(config)
