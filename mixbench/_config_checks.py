"""The checks of a configuration beyond what its JSON schema says (``mixbench.config.validate``
runs them around the schema): raw values no schema sees (keys that are not text, NaN), the
schema's own errors told from the field at fault, model sizes against the size table, the
Debian corpus's domains, per-domain caps, settings given per size. The checks that need a
strategy class (names, hyperparameters, signals, the sizes and batches of each stage's runs)
are strategies/grid_config.py's; ``validate`` runs them with these when they are passed to it.

Each function returns problems, one line each, starting with the field at fault as a dotted
path (``training.seq_len: ...``); ``config.raise_problems`` turns them into one ConfigError.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

import jsonschema

from mixbench import _config_fields as fields
from mixbench import variants
from mixbench.debian_domains import DOMAINS as DEBIAN_DOMAINS
from mixbench.model_sizes import SIZES


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
                problems.append(f"{fields.where(path)}: contains itself (a YAML alias of an enclosing node)")
                return
            inner = open_containers | {id(value)}
            items = value.items() if isinstance(value, dict) else enumerate(value)
            for key, item in items:
                if isinstance(value, dict) and not isinstance(key, str):
                    problems.append(f"{fields.where((*path, key))}: a key must be text, got {type(key).__name__} "
                                    f"{key!r} (YAML reads 1:, true: or null: as a number, boolean or null: quote it)")
                    continue
                walk(item, (*path, key), inner)
        elif isinstance(value, float) and not math.isfinite(value):
            problems.append(f"{fields.where(path)}: {value} is not a finite number")

    walk(config, (), frozenset())
    return problems


def schema_problems(error: jsonschema.ValidationError) -> list[str]:
    """What a schema error says, starting with the field it is about (not only its parent)."""
    field = fields.where(error.path)
    if error.validator == "required":
        schema_of = error.schema.get("properties", {})
        return [f"{fields.where([*error.path, name])}: required, and it has no default"
                + (f" ({schema_of[name]['description']})" if "description" in schema_of.get(name, {}) else "")
                for name in error.validator_value if name not in error.instance]
    if error.validator == "additionalProperties" and error.validator_value is False:
        known = ", ".join(error.schema.get("properties", {}))
        parent = field if error.path else "the top level"
        return [f"{fields.where([*error.path, name])}: unknown field; {parent} takes {known}"
                for name in error.instance if name not in error.schema.get("properties", {})]
    if "propertyNames" in error.schema_path:  # the instance is the key itself
        return [f"{fields.where([*error.path, error.instance])}: {error.message}"]
    if error.validator in ("oneOf", "anyOf") and error.context:
        # The deepest reason: for {small: "x"} where a number or a mapping of numbers is expected,
        # that "x" is not a number, not that the mapping is not a number.
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        return [f"{fields.where(deepest.absolute_path)}: {deepest.message}{_hint(deepest)}"]
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


def semantic_problems(config: dict, strategy_problems: Callable[[dict], list[str]] | None = None) -> list[str]:
    """Everything wrong with a schema-valid config with its variants expanded; with
    ``strategy_problems`` (a function of the config, strategies/grid_config.py's), its grid strategies too."""

    problems = folder_problems(config)
    unknown_sizes = [s for s in config["grid"]["sizes"] if s not in SIZES]
    if unknown_sizes:  # every check below reads the size table
        return problems + [f"grid.sizes: unknown size(s) {unknown_sizes}; known sizes: {sorted(SIZES)}"]
    problems += list(strategy_problems(config)) if strategy_problems else []
    problems += fan_out_field_problems(config)
    corpus = config["corpus"]
    if corpus["source"] == "debian":
        unknown = [d for d in corpus["domains"] if d not in DEBIAN_DOMAINS]
        if unknown:
            problems.append(f"corpus.domains: {unknown} are not Debian corpus domains; "
                            f"valid: {', '.join(DEBIAN_DOMAINS)}")
    problems += corpus_problems(corpus)
    for field in fields.RESOURCE_FIELDS:  # one value per size, or one for all
        unsized = sorted(set(fields.keyed_values(config["training"][field])) - {"default"} - set(SIZES))
        if unsized:
            problems.append(f"training.{field}: unknown size(s) {unsized}; known sizes: {sorted(SIZES)}")
    downstream = config["downstream"]
    if any(t.startswith("mixbench_") for t in downstream["tasks"]):
        for size in config["grid"]["sizes"]:
            if downstream["continuation_chars"] >= SIZES[size].n_positions:
                problems.append(f"downstream.continuation_chars: {downstream['continuation_chars']} must be below "
                                f"size {size!r}'s context of {SIZES[size].n_positions} tokens (grid.sizes)")
    return problems


# The folder settings, with their defaults: each names a folder that is written to or read from as a whole.
FOLDER_FIELDS = {("data_dir",): "data", ("runs_dir",): "runs", ("results_dir",): "results",
                 ("corpus", "deb_dir"): "data/debs"}
# The folders whose paths Snakemake's rules are made of: it reads braces in a file pattern as a
# wildcard, with no escape.
SNAKEMAKE_FOLDERS = (("data_dir",), ("runs_dir",), ("results_dir",))


def folder_problems(config: dict) -> list[str]:
    """Folder settings that would put the grid's files somewhere other than a folder of their own:
    empty or blank (a path relative to nothing: outputs at the file system's root), the root
    itself, or characters a library reads as syntax rather than as part of a name."""
    problems = []
    for path, default in FOLDER_FIELDS.items():
        value = config.get(path[0]) if len(path) == 1 else (config.get(path[0]) or {}).get(path[1])
        if not isinstance(value, str):
            continue  # the schema's to report
        field = fields.where(path)
        if not value.strip():
            problems.append(f"{field}: {value!r} names no folder (the grid's files would land at the file "
                            f"system's root); give a folder, e.g. the default {default!r}")
        elif os.path.realpath(value) == os.path.realpath(os.sep):
            problems.append(f"{field}: {value!r} is the file system's root; give a folder of its own")
        elif path in SNAKEMAKE_FOLDERS and ("{" in value or "}" in value):
            problems.append(f"{field}: {value!r} holds a brace, which Snakemake reads as a wildcard in a file "
                            "path; rename the folder without '{' and '}'")
        elif path == ("data_dir",) and "::" in value:
            problems.append(f"{field}: {value!r} holds '::', which the Hugging Face datasets library reads as a "
                            "chain of file systems (the evaluation tasks are read from this folder); use a path "
                            "without '::'")
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


FAN_OUT_FIELDS = ("pack", "save_model")  # settings of a fan-out stage's runs (stage_pack, stage_saves_model)


def fan_out_field_problems(config: dict) -> list[str]:
    """``pack`` and ``save_model`` set on a stage that does not fan out (only ``swarm`` does)."""
    entries = {"stages": config["stages"], **{f"strategies.{name}.stages": entry.get("stages") or {}
                                              for name, entry in config["strategies"].items()}}
    return [f"{where}.{kind}.{field}: `{field}` applies to the runs of a fan-out stage (swarm) only, not to {kind!r}"
            for where, stages in entries.items() for kind, layer in stages.items()
            for field in FAN_OUT_FIELDS if kind != "swarm" and layer.get(field) is not None]


def corpus_problems(corpus: dict) -> list[str]:
    """Per-domain caps that name no configured domain, or leave one without a cap."""
    caps = fields.keyed_values(corpus["max_bytes_per_domain"])
    problems = [f"corpus.max_bytes_per_domain: names {name!r}, which is not in corpus.domains {corpus['domains']}"
                for name in caps if name != "default" and name not in corpus["domains"]]
    if "default" not in caps:
        uncapped = [d for d in corpus["domains"] if d not in caps]
        if uncapped:
            problems.append(f"corpus.max_bytes_per_domain: no cap for {uncapped} and no `default` "
                            f"(corpus.domains: {corpus['domains']})")
    return problems
