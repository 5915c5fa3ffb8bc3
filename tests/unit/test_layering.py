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
