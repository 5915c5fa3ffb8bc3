"""The packages of tuneserve point one way: no import cycle between them, and the lower layers never
import the ones above. Read from the source with `ast` (imports inside functions count too), so a
back-edge fails here before it becomes a tangle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "src" / "tuneserve"

# What each lower layer must never import (top-level modules count as packages: cli, app, demo, ...).
FORBIDDEN = {
    "store": {"data", "models", "training", "inference", "jobs", "api", "evaluation", "synthesis", "llm", "app", "cli"},
    "models": {"store", "data", "training", "inference", "jobs", "api", "evaluation", "synthesis", "app", "cli"},
    "data": {"store", "training", "inference", "jobs", "api", "evaluation", "synthesis", "llm", "app", "cli"},
    "llm": {"store", "training", "inference", "jobs", "api", "evaluation", "synthesis", "app", "cli"},
    "training": {"store", "inference", "jobs", "api", "evaluation", "synthesis", "app", "cli"},
    "inference": {"store", "training", "jobs", "api", "evaluation", "synthesis", "app", "cli"},
    "synthesis": {"store", "training", "jobs", "api", "evaluation", "app", "cli"},
    "jobs": {"api", "app", "cli"},
    "evaluation": {"api", "app", "cli", "synthesis"},
}

# Modules a layer must never import though it may import their package: the api builds its answers from
# what the services return, by attribute (api/responses.py), so it never sees a table class, even for typing.
FORBIDDEN_MODULES = {"api": {"tuneserve.store.tables"}}


def import_graph() -> dict[str, dict[str, list[str]]]:
    """package -> imported package -> where ("file:line"), for every import of tuneserve.X in src/."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in ROOT.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        package = path.relative_to(ROOT).parts[0].removesuffix(".py")
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "tuneserve":
                names = [node.module] if node.module != "tuneserve" else [f"tuneserve.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names if a.name.split(".")[0] == "tuneserve"]
            else:
                continue
            for name in names:
                parts = name.split(".")
                if len(parts) > 1 and parts[1] != package and parts[1] != "__init__":
                    graph[package][parts[1]].append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return graph


def test_the_graph_is_read_from_the_source():
    graph = import_graph()
    assert "data" in graph["training"] and "store" in graph["jobs"] and "llm" in graph["evaluation"]


def test_no_package_imports_one_that_imports_it_back():
    graph = import_graph()

    def reachable(start: str) -> set[str]:
        seen, todo = set(), [start]
        while todo:
            for nxt in graph.get(todo.pop(), {}):
                if nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return seen

    cycles = [f"{a} -> {b} ({graph[a][b][0]})" for a in sorted(graph) for b in sorted(graph[a]) if a in reachable(b)]
    assert cycles == [], "package cycles: " + "; ".join(cycles)


def test_lower_layers_never_import_the_layers_above():
    graph = import_graph()
    back_edges = [
        f"{low} -> {high} ({where[0]})"
        for low, banned in FORBIDDEN.items()
        for high, where in graph.get(low, {}).items()
        if high in banned
    ]
    assert back_edges == [], "back-edges: " + "; ".join(back_edges)


def imported_modules(path: Path) -> list[tuple[str, int]]:
    """Every module `path` imports (`from a.b import c` counts as a.b and a.b.c), with its line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found += [(node.module, node.lineno)] + [(f"{node.module}.{a.name}", node.lineno) for a in node.names]
        elif isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
    return found


def test_the_module_imports_are_read_from_the_source():
    # store/files.py says `from tuneserve.store.tables import File`: both the module and the name are seen.
    modules = {module for module, _ in imported_modules(ROOT / "store" / "files.py")}
    assert {"tuneserve.store.tables", "tuneserve.store.tables.File"} <= modules


def test_layers_never_import_the_modules_forbidden_to_them():
    offending = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for package, banned in FORBIDDEN_MODULES.items()
        for path in (ROOT / package).rglob("*.py")
        for module, line in imported_modules(path)
        if any(module == b or module.startswith(b + ".") for b in banned)
    ]
    assert offending == [], "; ".join(offending)
