"""The import structure: import-linter's contracts hold, and no import cycle exists.

The contracts (pyproject.toml `[tool.importlinter]`): the layers, each importing only from
those below it; the core doing no I/O; only `att_jm.mqtt` importing paho. What import-linter
does not check is checked here too: no module (and no top-level package, taken whole)
reaches itself through others.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parents[2]


def test_the_import_linter_contracts_hold() -> None:
    lint = Path(sys.executable).parent / "lint-imports"
    done = subprocess.run([str(lint), "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Contracts: 4 kept, 0 broken." in done.stdout


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node, or with a self-loop
    (Tarjan's algorithm, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges.get(root, ()))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1 or node in edges.get(node, ()):
                    found.append(sorted(component))
    return found


def module_edges() -> dict[str, set[str]]:
    graph = grimp.build_graph("att_jm", "projections")
    return {module: set(graph.find_modules_directly_imported_by(module))
            for module in graph.modules}


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "att_jm" else parts[0]


def test_no_module_imports_itself_through_others() -> None:
    assert cycles(module_edges()) == []


def test_no_top_level_package_imports_itself_through_others() -> None:
    packages: dict[str, set[str]] = {}
    for module, imported in module_edges().items():
        source = package_of(module)
        targets = {package_of(other) for other in imported} - {source}
        packages.setdefault(source, set()).update(targets)
    packages.pop("att_jm", None)  # the root package (__version__) is everyone's
    for targets in packages.values():
        targets.discard("att_jm")
    assert cycles(packages) == []


def test_the_cycle_finder_finds_cycles() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"a"}}) == [["a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
