"""What a registered table or figure is (eval/analysis/table_registry.py and figure_registry.py
hold the registries): the function that makes it, its caption, and the grids that have it.

An entry names its function as ``"module:attribute"`` (imported only when the output is made,
so the workflow reads the registries while it is parsed without importing pandas' or
matplotlib's users) and says which grids it belongs to: ``needs``, one of ``CONDITIONS``, and/or
``strategy``, a name of the strategy registry (strategies/__init__.py) whose runs it reads: the
grid has the output when one of its strategies is that strategy or a subclass of it. The
workflow lists a grid's outputs from these alone, before any run exists.
"""

from __future__ import annotations

import ast
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

from mixbench import REPO_ROOT
from mixbench.config import Stage
from mixbench.registry import lazy_load
from strategies import get_strategy_class
from strategies.runs import strategy_class, strategy_stages

CONDITIONS: dict[str, Callable[[dict], bool]] = {
    "downstream": lambda config: bool(config["downstream"]["tasks"]),  # downstream.tasks configured
    "several sizes": lambda config: len(config["grid"]["sizes"]) > 1,
    "variants": lambda config: bool(config["grid"]["variants"]),  # grid.variants: hyperparameter sweeps
    "landscape": lambda config: config.get("landscape") is not None,  # the landscape study (docs/landscape.md)
    # a strategy of the grid has a ``fit`` stage (RegMix's regression on its swarm)
    "fit stage": lambda config: any(Stage.parse(stage).kind == "fit" for name in config["grid"]["strategies"]
                                    for stage in strategy_stages(config, name)),
}


@dataclass(frozen=True)
class Output:
    function: str  # "module:attribute"
    caption: str  # reStructuredText, shown beside the output in `snakemake --report`
    needs: str | None = None  # a key of CONDITIONS; None: every grid
    strategy: str | None = None  # a strategy registry name; None: any strategy

    def __post_init__(self):
        if self.needs is not None and self.needs not in CONDITIONS:
            raise ValueError(f"unknown condition {self.needs!r}; conditions: {', '.join(CONDITIONS)}")

    def wanted(self, config: dict) -> bool:
        """Whether the grid of ``config`` has this output."""
        if self.needs is not None and not CONDITIONS[self.needs](config):
            return False
        if self.strategy is None:
            return True
        needed = get_strategy_class(self.strategy)
        return any(issubclass(strategy_class(config, name), needed)
                   for name in config["grid"]["strategies"])


def load(registry: dict[str, Output], name: str, kind: str):
    """The function registered as ``name``; KeyError lists the registered names."""
    return lazy_load({n: entry.function for n, entry in registry.items()}, name, unknown=f"unknown {kind}",
                     listing=f"registered {kind}s")


def write_captions(registry: dict[str, Output], names: Iterable[str], folder: str | Path) -> dict[str, Path]:
    """Each output's caption as ``{folder}/{name}.rst`` for the report (rewritten only when it
    changed, so that its date says when the text did); {name: path}."""
    paths = {}
    for name in names:
        path = Path(folder) / f"{name}.rst"
        text = textwrap.dedent(registry[name].caption).strip() + "\n"
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
        paths[name] = path.resolve()
    return paths


def code_files(modules: Iterable[str]) -> list[Path]:
    """The source files of ``modules`` and of every module of eval/ they import, transitively:
    a rule that makes outputs reruns when any of them changes."""
    found: dict[str, Path] = {}
    pending = list(modules)
    while pending:
        module = pending.pop()
        path = REPO_ROOT / (module.replace(".", "/") + ".py")
        if module in found or not path.is_file():
            continue
        found[module] = path
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                pending += [alias.name for alias in node.names if alias.name.startswith("eval.")]
            elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "eval":
                # `from eval.analysis import collect` imports the module eval.analysis.collect
                pending += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
    return sorted(found.values())
