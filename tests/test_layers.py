"""The project's layers import downward only, and no project module imports itself through others.

Layers, lowest first: mixbench/ (configuration, files, errors, entry-point plumbing); corpus/ and
strategies/ (siblings: neither imports the other); models/; eval/; benchmarks/; scripts/ (which
drive the benchmarks). Every import counts, at module level and inside functions alike: an import placed in a
function still runs, so it is no way around a layer or a cycle. Read with ``ast`` alone (nothing is
imported), so the walk takes a fraction of a second.
"""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
LAYERS = {"mixbench": 0, "corpus": 1, "strategies": 1, "models": 2, "eval": 3, "benchmarks": 4, "scripts": 5}
UPPER_PACKAGES = ("corpus", "strategies", "models", "eval")


def project_modules() -> dict[str, Path]:
    """{dotted module name: file} of every module of the layered packages, subpackages included."""
    modules = {}
    for package in LAYERS:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(name: str, path: Path, modules: dict[str, Path]) -> list[tuple[str, int]]:
    """(project module, line) of every import in a module's file, wherever it is placed."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = name.split(".") if is_package else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join([*package, *([base] if base else [])])
            # `from package import module` imports the module; `from module import name`, the module.
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in modules:  # `import a.b.c` of a name inside a module: its module
                target = target.rpartition(".")[0]
            if target and target != name:
                found.append((target, node.lineno))
    return found


@functools.cache  # read once for both tests
def import_graph() -> tuple[dict[str, Path], dict[str, dict[str, int]]]:
    """The modules, and {module: {module it imports: first line}}."""
    modules = project_modules()
    graph = {name: {} for name in modules}
    for name, path in modules.items():
        for target, line in imported_modules(name, path, modules):
            graph[name].setdefault(target, line)
    return modules, graph


def layer_of(module: str) -> tuple[str, int]:
    top = module.split(".")[0]
    return top, LAYERS[top]


def upward_imports(modules, graph) -> list[str]:
    """An import of a higher layer, or of a sibling package of the same layer."""
    found = []
    for name, targets in graph.items():
        (package, rank) = layer_of(name)
        for target, line in targets.items():
            (other, other_rank) = layer_of(target)
            if other != package and other_rank >= rank:
                found.append(f"{modules[name].relative_to(REPO)}:{line}: {name} ({package}, layer {rank}) imports "
                             f"{target} ({other}, layer {other_rank})")
    return found


def import_cycles(graph) -> list[list[str]]:
    """One cycle through each strongly connected group of modules (Tarjan's algorithm)."""
    index, low, stack, on_stack, groups = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [cycle_in(group, graph) for group in groups]


def cycle_in(group: set[str], graph) -> list[str]:
    """A shortest path from the group's first module back to itself, within the group."""
    start = min(group)
    paths, seen = [[start]], {start}
    while paths:
        path = paths.pop(0)
        for target in sorted(graph[path[-1]]):
            if target == start:
                return [*path, start]
            if target in group and target not in seen:
                seen.add(target)
                paths.append([*path, target])
    raise AssertionError(f"no cycle through {start} in {sorted(group)}")


def describe_cycle(cycle: list[str], modules, graph) -> str:
    return " -> ".join(f"{name} ({modules[name].relative_to(REPO)}:{graph[name][cycle[i + 1]]})"
                       if i + 1 < len(cycle) else name for i, name in enumerate(cycle))


def test_every_import_goes_to_a_lower_layer():
    modules, graph = import_graph()
    assert len(modules) > 100 and "eval.analysis.collect" in modules  # the walk saw every package
    assert upward_imports(modules, graph) == []


def test_no_module_imports_itself_through_others():
    modules, graph = import_graph()
    assert [describe_cycle(cycle, modules, graph) for cycle in import_cycles(graph)] == []


def test_the_walk_finds_function_level_upward_imports_and_cycles(tmp_path):
    """The checks themselves, on a graph with one upward import inside a function and one cycle."""
    source = "def f():\n    from strategies import grid_config\n"
    found = imported_modules("mixbench.x", _file(tmp_path, source), {"mixbench.x": None, "strategies": None,
                                                                    "strategies.grid_config": None})
    assert found == [("strategies.grid_config", 2)]
    graph = {"mixbench.x": {"strategies.grid_config": 2}, "strategies.grid_config": {"mixbench.x": 1}, "models.a": {}}
    modules = {name: REPO / name.replace(".", "/") for name in graph}
    assert upward_imports(modules, graph) == [
        "mixbench/x:2: mixbench.x (mixbench, layer 0) imports strategies.grid_config (strategies, layer 1)"]
    assert import_cycles(graph) == [["mixbench.x", "strategies.grid_config", "mixbench.x"]]


def _file(tmp_path: Path, source: str) -> Path:
    path = tmp_path / "x.py"
    path.write_text(source, encoding="utf-8")
    return path


def test_importing_the_configuration_loads_no_upper_layer():
    """What `import mixbench.config` loads, in a fresh interpreter: nothing of corpus/, strategies/,
    models/ or eval/ (an import by importlib would not show in the walk above; this sees it)."""
    code = ("import sys, mixbench.config, mixbench.cli; "
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {UPPER_PACKAGES!r}))")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
