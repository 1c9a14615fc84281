"""Name → "module:Attribute" registries whose entries are imported only when asked for."""

from __future__ import annotations

import importlib


def lazy_load(registry: dict[str, str], name: str, *, unknown: str, listing: str):
    """Import and return ``registry[name]``. An unknown name raises KeyError
    "{unknown} 'name'; {listing}: a, b, c"."""
    if name not in registry:
        raise KeyError(f"{unknown} {name!r}; {listing}: {', '.join(sorted(registry))}")
    module_name, attribute = registry[name].split(":")
    return getattr(importlib.import_module(module_name), attribute)
