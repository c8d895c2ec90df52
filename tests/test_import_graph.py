"""The package's import graph: no circles between its modules, and library code never imports the scripts.

Read statically from the sources (every ``import`` statement, also those inside functions, since a deferred import
is still a dependency), so the test sees the whole package without importing it. A package's ``__init__`` running
before its submodules is Python's import order, not a dependency, and is not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import evl_kd_trainer

PACKAGE = "evl_kd_trainer"
ROOT = Path(evl_kd_trainer.__file__).resolve().parent.parent

# Circles still being removed elsewhere (the trainer split of issue 11 item 3): delete the entry when it lands.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    modules = {}
    for file in (ROOT / PACKAGE).rglob("*.py"):
        parts = list(file.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = file
    return modules


def _imported_names(module: str, file: Path) -> set[str]:
    """Every dotted name ``module`` imports (``from a import b`` yields ``a`` and ``a.b``; relative imports resolved)."""
    names: set[str] = set()
    package = module.split(".") if file.name == "__init__.py" else module.split(".")[:-1]
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"), str(file))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            names.add(source)
            names.update(f"{source}.{alias.name}" for alias in node.names)
    return names


def import_graph() -> dict[str, set[str]]:
    """``module -> the package's modules it imports``."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, file in modules.items():
        targets = set()
        for name in _imported_names(module, file):
            while name and name not in modules:  # `from pkg.mod import function` -> pkg.mod
                name = name.rpartition(".")[0]
            if name and name != module:
                targets.add(name)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def test_the_checker_finds_a_circle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert cycles(graph) == [frozenset({"a", "b", "c"})]


def test_graph_reads_deferred_and_relative_imports():
    graph = import_graph()
    # a function-level import counts: the live teacher side imports feature capture inside `live_teacher_side`
    assert "evl_kd_trainer.models.capture" in graph["evl_kd_trainer.trainer.features"]
    assert "evl_kd_trainer.models.registry" in graph["evl_kd_trainer.models.families.qwen_vl"]


def test_no_import_circles():
    found = set(cycles(import_graph())) - KNOWN_CYCLES
    assert not found, "import circles: " + "; ".join(" <-> ".join(sorted(c)) for c in found)


def test_library_code_never_imports_the_scripts():
    # Entry points (the `evl-kd` dispatcher and the `cli` modules it dispatches to) may run a script.
    def is_entry_point(module: str) -> bool:
        last = module.rpartition(".")[2]
        return module.startswith(f"{PACKAGE}.scripts") or last == "cli" or last.startswith("cli_")

    offenders = {
        module: sorted(t for t in targets if t.startswith(f"{PACKAGE}.scripts"))
        for module, targets in import_graph().items()
        if not is_entry_point(module)
    }
    assert not {module: targets for module, targets in offenders.items() if targets}
