"""A mixbench configuration: the one public module that loads, checks and reads one.

``read_files`` reads config files (each with the chain of files its ``base:`` names), the JSON
schema in rules/schemas/config.schema.yaml checks structure and fills defaults, then the checks
of mixbench/_config_checks.py check what a schema cannot: model sizes against the size table,
the Debian corpus's domains, per-domain caps, settings given per size. What needs a strategy
class (names, hyperparameters, signals, the runs of each stage) is checked one layer up:
``strategies.grid_config.load`` is ``load`` with those checks, which the workflow (rules/common.smk)
and every entry point that trains, plans or reads a grid's runs use. ``load`` and ``validate``
here check the data steps' part alone (the corpus and tokenizer builds, below the strategies'
layer): a config they pass may still name an unknown strategy or hyperparameter. No module above
the strategies' layer (models/, eval/, benchmarks/, scripts/, rules/) calls them:
tests/test_config_loaders.py fails on one that does.

The functions that read a config's fields (mixbench/_config_fields.py), a run and the stage of
a run (``Run``, ``Stage``, mixbench/_stages.py) are reached through this module alone (``__all__``).

Every rejection is a ConfigError whose first line names the field at fault (a dotted path such
as ``training.lr``); a single problem is a single line.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
from collections.abc import Callable
from pathlib import Path

import jsonschema
import yaml

from mixbench import REPO_ROOT, variants
from mixbench import _config_checks as checks
from mixbench._config_checks import where_strategy
from mixbench._config_fields import (
    RESOURCE_FIELDS, RunResources, domain_cap, keyed_value, keyed_values, micro_batch_size, micro_batch_sizes,
    resolve_stages, resource_setting, run_dir, run_resources, stage_allows_larger, stage_layers, stage_pack,
    stage_saves_model, stage_setting, stage_training, strategy_class_name, strategy_entry, strategy_hparams, where,
)
from mixbench._stages import (
    FAN_OUT_KINDS, STAGE_KINDS, STAGE_PATTERN, TRAINED_STAGE_PATTERN, Run, Stage, describe_stages, one_run_per_stage,
)
from mixbench.errors import ConfigError

__all__ = [
    # loading and checking
    "ConfigError", "OPERATIONAL_FIELDS", "SCHEMA_PATH", "config_hash", "deep_merge", "fingerprint", "load",
    "load_schema", "raise_problems", "read_files", "read_layered", "relevant_sections", "validate", "where",
    "where_strategy",
    # a run and its stage
    "FAN_OUT_KINDS", "STAGE_KINDS", "STAGE_PATTERN", "TRAINED_STAGE_PATTERN", "Run", "Stage", "describe_stages",
    "one_run_per_stage",
    # a config's fields
    "RESOURCE_FIELDS", "RunResources", "domain_cap", "keyed_value", "keyed_values", "micro_batch_size",
    "micro_batch_sizes", "resolve_stages", "resource_setting", "run_dir", "run_resources", "stage_allows_larger",
    "stage_layers", "stage_pack", "stage_saves_model", "stage_setting", "stage_training", "strategy_class_name",
    "strategy_entry", "strategy_hparams",
]

SCHEMA_PATH = REPO_ROOT / "rules" / "schemas" / "config.schema.yaml"
# Fields that change how a job runs but not what it computes, beyond the order of floating-point
# operations: changing them reruns no finished job and does not invalidate a checkpoint. The
# number of processes is one of them because every step's data is the same for any number
# (corpus/sampler.py); the device because a model trained on a CPU is not retrained on a GPU.
OPERATIONAL_FIELDS = {
    "training": ("threads", "checkpoint_every", "log_flush_steps", "log_flush_seconds", "tensorboard", "eval_every",
                 "reweighted_step",
                 "processes", "nodes", "device", "compile", "micro_batch_size", "runtime", "peak_tflops"),
    "evaluation": ("batch_size",),
    "tokenizer": ("workers",),
}


def _with_defaults(validator_class):
    """A validator that also fills in each property's ``default`` (jsonschema leaves them out)
    and takes only Python ints as integers (jsonschema also takes 300.0, which would name a
    folder seed1.0 or reach range() as a float)."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, subschema in properties.items():
                if "default" in subschema and name not in instance:
                    instance[name] = copy.deepcopy(subschema["default"])
        yield from validate_properties(validator, properties, instance, schema)

    strict_integers = validator_class.TYPE_CHECKER.redefine(
        "integer", lambda checker, value: isinstance(value, int) and not isinstance(value, bool))
    return jsonschema.validators.extend(validator_class, {"properties": set_defaults}, type_checker=strict_integers)


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return yaml.safe_load(f)


@functools.lru_cache(maxsize=1)
def _schema_validator() -> jsonschema.protocols.Validator:
    # Parsing the schema's YAML costs ~50 ms, 20 times the rest of a validation: parse it once.
    return _Validator(load_schema())


def validate(config: dict, *, strategy_problems: Callable[[dict], list[str]] | None = None) -> dict:
    """Return a validated copy of ``config`` with defaults filled in; raise ConfigError otherwise.
    Without ``strategy_problems``, the data steps' checks alone (see the module's docstring).
    ``strategy_problems``: the checks of the grid's strategies (``strategies.grid_config.validate`` passes
    them), whose problems are said with the others in one ConfigError."""
    raise_problems(checks.value_problems(config))  # before the schema: it cannot see these
    config = copy.deepcopy(config)
    raise_problems([checks.overlay_problem(config)])  # more to the point than what the schema finds
    errors = sorted(_schema_validator().iter_errors(config), key=lambda e: [str(p) for p in e.path])
    # One problem per field, the schema's first: "-1.5 is not an integer" without "... nor >= 0".
    problems: dict[str, str] = {}
    for problem in (problem for error in errors for problem in checks.schema_problems(error)):
        problems.setdefault(problem.split(": ", 1)[0], problem)
    raise_problems(list(problems.values()))
    try:
        config = variants.expand(config)
    except ConfigError as exc:  # said like every other problem
        problem = str(exc)
    else:
        problem = None
    raise_problems([problem])
    raise_problems(checks.semantic_problems(config, strategy_problems))
    return config


def raise_problems(problems: list[str | None]) -> None:
    """Raise one ConfigError for every problem found: the first on the first line, the others
    one per line below it. Each problem starts with the field it is about."""
    problems = list(dict.fromkeys(p for p in problems if p))
    if len(problems) == 1:
        raise ConfigError(f"invalid configuration: {problems[0]}")
    if problems:
        first, *others = problems
        raise ConfigError(f"invalid configuration ({len(problems)} problems): {first}\n"
                          + "\n".join(f"  - {p}" for p in others))


def load(*paths: str | Path, overrides: dict | None = None) -> dict:
    """Read YAML files in order (later ones win, key by key; each over the ``base:`` chain it
    names) plus overrides, then validate what the data steps need (not the grid's strategies: an
    entry point that trains, evaluates or reads runs loads with ``strategies.grid_config.load``)."""
    return validate(deep_merge(read_files(*paths), overrides or {}))


def read_files(*paths: str | Path) -> dict:
    """The config files merged in order, each over the files its ``base:`` names, not validated."""
    merged: dict = {}
    for path in paths:
        merged = deep_merge(merged, read_layered(Path(path)))
    return merged


def read_layered(path: Path, chain: tuple[Path, ...] = ()) -> dict:
    """One config file over the file its ``base:`` key names (relative to the repository root, or
    absolute), recursively; the result has no ``base`` key. ``chain``: the files that led here."""
    origin = f" (the base of {chain[-1]})" if chain else ""
    resolved = path.resolve()
    if resolved in chain:
        raise ConfigError(f"base: config files name each other as base in a cycle: "
                          f"{' -> '.join(map(str, (*chain, resolved)))}")
    if not path.is_file():
        raise ConfigError(f"base: config file not found: {path}{origin}" if chain else f"config file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}{origin}: not a readable YAML file: {' '.join(str(exc).split())}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ConfigError(f"(top level) of {path}{origin}: a config file holds a mapping of sections, "
                          f"got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str) or not base:
        raise ConfigError(f"base: the path of a config file to layer this one on, got {base!r} in {path}")
    base_path = Path(base) if Path(base).is_absolute() else REPO_ROOT / base
    return deep_merge(read_layered(base_path, (*chain, resolved)), raw)


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


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


def config_hash(config: dict) -> str:
    """Short stable hash of the validated config, recorded with every result row."""
    return fingerprint(config)
