"""The tables and figures a test grid should have, worked out from the registries' entries
(eval/analysis/table_registry.py, figure_registry.py) and what the test states about its grid,
so that registering a new output needs no edit of a list in the tests."""

from __future__ import annotations

from typing import Iterable

from eval.analysis.outputs import CONDITIONS, Output
from strategies import get_strategy_class


def expected_outputs(registry: dict[str, Output], *, strategies: Iterable[str], holds: Iterable[str] = ()) -> list[str]:
    """The names of ``registry`` in registry order whose entry belongs to a grid of ``strategies``
    (registry names: the bases of any variants) in which the conditions ``holds`` (names of
    eval/analysis/outputs.py's CONDITIONS) are true and the others false: an entry's ``needs``
    must hold, and its ``strategy`` must be one of the grid's strategies or a base class of one."""
    holds = set(holds)
    assert holds <= set(CONDITIONS), f"unknown conditions {sorted(holds - set(CONDITIONS))}"
    classes = [get_strategy_class(name) for name in strategies]

    def belongs(entry: Output) -> bool:
        if entry.needs is not None and entry.needs not in holds:
            return False
        return entry.strategy is None or any(issubclass(c, get_strategy_class(entry.strategy)) for c in classes)

    return [name for name, entry in registry.items() if belongs(entry)]


def in_registry_order(names: list[str], registry: dict[str, Output]) -> bool:
    """Whether ``names`` are distinct registry names listed in the registry's order."""
    order = list(registry)
    return len(set(names)) == len(names) and names == sorted(names, key=order.index)
