"""Registry of mixing strategies: name -> class, imported only when asked for.

How to add a strategy
---------------------
1. Write ``strategies/<module>.py`` with a subclass of ``strategies.base.Strategy``:
   set ``stages`` (default ``("final",)``), ``signals`` (optional extra training signals, by
   the names of their providers in ``models/signals``; options through ``signal_options``),
   ``defaults`` (its hyperparameters), and implement ``initial_weights()``; override
   ``update(stats)`` to change the weights during training. Do not import torch at module
   level: the workflow reads ``stages`` while it is being parsed.
   ``trace()`` (optional) returns the strategy's own extras of a step for trace.jsonl: list its
   keys in the class docstring (the weights need no trace: every run's log.csv holds them).
   A strategy that overrides ``loss_weights`` in only some of its stages overrides
   ``has_loss_weights()`` to say which: those stages log ``loss_weight/<d>`` columns in log.csv.
   A strategy whose settings can leave its weights unchanged for a whole run (an update interval
   past the run's end, a step that cannot move them) overrides the classmethod ``static_reason``
   to say when, and adds ``"allow_static": False`` to ``defaults``: the config check then refuses
   such a grid before any job unless the entry sets ``allow_static: true`` (docs/strategies.md).
2. Register it below: ``"<name>": "strategies.<module>:<Class>"``.
3. Add ``<name>`` to ``grid.strategies`` in the config, and its hyperparameters under
   ``strategies: {<name>: {...}}``. The workflow derives the runs from ``stages``; the
   tables and figures pick the new name up by themselves.
4. Test ``update`` on a hand-computed step in ``tests/``.
"""

from __future__ import annotations

from mixbench.registry import lazy_load
from strategies.base import Strategy, StepStats, StrategyContext, validate_weights

REGISTRY: dict[str, str] = {
    "uniform": "strategies.static:Uniform",
    "natural": "strategies.static:Natural",
    "static": "strategies.static:Static",
    "doremi": "strategies.doremi:DoReMi",
    "doge": "strategies.doge:DoGE",
    "dograph": "strategies.dograph:DoGraph",
    "regmix": "strategies.regmix:RegMix",
    "lattice": "strategies.lattice:Lattice",
    "unimax": "strategies.unimax:UniMax",
    "odm": "strategies.odm:ODM",
    "chameleon": "strategies.chameleon:Chameleon",
    "aioli": "strategies.aioli:Aioli",
    "skillit": "strategies.skillit:SkillIt",
    "ado": "strategies.ado:ADO",
}


def available() -> list[str]:
    return sorted(REGISTRY)


def get_strategy_class(name: str) -> type[Strategy]:
    """Import and return the class registered as ``name``; KeyError lists the valid names."""
    cls = lazy_load(REGISTRY, name, unknown="unknown strategy", listing="registered strategies")
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        raise TypeError(f"{REGISTRY[name]} is not a Strategy subclass")
    return cls


__all__ = ["REGISTRY", "Strategy", "StepStats", "StrategyContext", "available", "get_strategy_class", "validate_weights"]
