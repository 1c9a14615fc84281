"""Hyperparameter sweeps as named strategies: ``grid.variants``.

    grid:
      strategies: [uniform, dograph]
      variants:
        dograph: {lam: [1, 100]}          # two strategies: dograph@lam=1, dograph@lam=100
        doremi: {step_size: [0.5, 2], smoothing: [0.001]}   # the product: 2 strategies

Each combination of the listed values becomes one grid strategy named
``<base>@<param>=<value>[,<param>=<value>...]``: a copy of the base's entry in ``strategies``
(or the implementation's defaults, for a bare registered name) with those values set. A variant
trains, evaluates and appears in every table like any other strategy, and its hyperparameters
are checked like any other entry's; the figure ``variants`` plots the metric against each swept
value. The base itself runs only if ``grid.strategies`` lists it. Names use only characters a
shell and a file system take as they are (``@ , = .`` and alphanumerics).
"""

from __future__ import annotations

import copy
import itertools
import re
from dataclasses import dataclass

from mixbench.errors import ConfigError

SEPARATOR = "@"
RESERVED = ("strategy", "stages")  # entry keys that are not hyperparameters
_SAFE_TEXT = re.compile(r"[A-Za-z0-9_.+-]+")


@dataclass(frozen=True)
class Variant:
    base: str  # the strategy entry (or registered name) it copies
    values: dict  # {hyperparameter: value} it sets


def format_value(value, where: str) -> str:
    """A swept value as it appears in a strategy's name: 1.0 -> "1", 1e-05 -> "1e-05", True -> "true"
    (floats to 12 significant digits: values that differ only beyond them share a name, an error)."""
    if isinstance(value, bool):
        return str(value).lower()
    if value is None:
        return "null"
    if isinstance(value, (int, float)):
        return format(value, ".12g") if isinstance(value, float) else str(value)
    if isinstance(value, str) and _SAFE_TEXT.fullmatch(value):
        return value
    raise ConfigError(f"{where}: {value!r} cannot be part of a strategy name; sweep numbers, booleans, null or "
                      "text of letters, digits and _ . + -")


def variant_name(base: str, values: dict) -> str:
    return base + SEPARATOR + ",".join(f"{k}={format_value(v, f'grid.variants.{base}.{k}')}"
                                       for k, v in values.items())


def variants(config: dict) -> dict[str, Variant]:
    """{name: Variant} of every combination ``grid.variants`` lists, in the order they run."""
    found: dict[str, Variant] = {}
    for base, sweep in config["grid"].get("variants", {}).items():
        if SEPARATOR in base:
            raise ConfigError(f"grid.variants.{base}: a variant cannot be swept again; sweep its base's "
                              "hyperparameters together instead")
        reserved = [k for k in sweep if k in RESERVED]
        if reserved:
            raise ConfigError(f"grid.variants.{base}: {reserved} are not hyperparameters and cannot be swept")
        for combination in itertools.product(*sweep.values()):
            values = dict(zip(sweep, combination))
            name = variant_name(base, values)
            if name in found:
                raise ConfigError(f"grid.variants.{base}: two combinations are both named {name!r} "
                                  f"(values that print alike, e.g. 1 and 1.0); list each value once")
            found[name] = Variant(base, values)
    return found


def expand(config: dict) -> dict:
    """``config`` with a ``strategies`` entry and a place in ``grid.strategies`` for every
    variant (right after its base, or its base's last variant, where the grid lists the base;
    at the end otherwise). Expanding an expanded config changes nothing, so a job reading the
    workflow's stored config sees the same names."""
    config = copy.deepcopy(config)
    order = config["grid"]["strategies"]
    for name, variant in variants(config).items():
        base_entry = config["strategies"].get(variant.base, {})
        entry = {**copy.deepcopy(base_entry), "strategy": base_entry.get("strategy", variant.base), **variant.values}
        existing = config["strategies"].get(name)
        if existing is not None and existing != entry:
            raise ConfigError(f"strategies.{name}: an entry of this name differs from the variant "
                              f"grid.variants.{variant.base} makes ({existing} vs {entry}); rename or remove it")
        config["strategies"][name] = entry
        if name in order:
            continue
        siblings = [i for i, s in enumerate(order) if s == variant.base or s.startswith(variant.base + SEPARATOR)]
        order.insert(siblings[-1] + 1 if siblings else len(order), name)
    return config
