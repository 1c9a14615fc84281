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

REPO_ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = REPO_ROOT / "rules" / "schemas" / "config.schema.yaml"
RESERVED_STRATEGY_KEYS = ("strategy", "stages")


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
    """Size and step count of one stage of one strategy (`final` always uses the grid's)."""
    resolved = {"size": size, "steps": config["training"]["steps"]}
    if stage == "final":
        return resolved
    for layer in (config["stages"].get(stage, {}), strategy_entry(config, name).get("stages", {}).get(stage, {})):
        resolved.update({k: v for k, v in layer.items() if v is not None})
    return resolved


def check_semantics(config: dict) -> None:
    # Imported here: the registry and size table are light, but keep config importable alone.
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
        except ConfigError as exc:
            problems.append(f"strategies.{name}: {exc}")
        for stage in cls.stages:
            size = stage_training(config, name, stage, config["grid"]["sizes"][0])["size"]
            if size not in SIZES:
                problems.append(f"strategies.{name}: stage {stage!r} uses unknown size {size!r}")
    unknown_sizes = [s for s in config["grid"]["sizes"] if s not in SIZES]
    if unknown_sizes:
        problems.append(f"grid.sizes: unknown size(s) {unknown_sizes}; known sizes: {sorted(SIZES)}")
    if config["corpus"]["source"] == "debian":
        from corpus.debian import DOMAINS

        unknown = [d for d in config["corpus"]["domains"] if d not in DOMAINS]
        if unknown:
            problems.append(f"corpus.domains: {unknown} are not Debian corpus domains; valid: {', '.join(DOMAINS)}")
    training = config["training"]
    if training["batch_size"] % training["micro_batch_size"]:
        problems.append(
            f"training: batch_size {training['batch_size']} is not a multiple of "
            f"micro_batch_size {training['micro_batch_size']}"
        )
    if training["warmup_steps"] >= training["steps"]:
        problems.append(f"training: warmup_steps {training['warmup_steps']} must be below steps {training['steps']}")
    if problems:
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))


def config_hash(config: dict) -> str:
    """Short stable hash of the validated config, recorded with every result row."""
    blob = json.dumps(config, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def main_guard(main):
    """Run an entry point; print MixbenchError messages without a traceback and exit 2."""
    import sys

    from mixbench.errors import MixbenchError

    def wrapped(argv=None):
        try:
            return main(argv)
        except MixbenchError as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(2)

    return wrapped


def config_command(step, description: str):
    """``main`` for an entry point whose only argument is the config: ``step(config)``."""
    import argparse

    @main_guard
    def main(argv=None):
        parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--config", nargs="+", required=True, help="config YAML file(s), later ones win")
        step(load(*parser.parse_args(argv).config))

    return main
