"""The import graph of kerascls/ and export/kerascls_edge/: no cycles, edges only downward.

Every ``import`` and ``from … import`` is read with ``ast``, function-level ones included
(a lazy import hides a cycle from Python, not from a reader). A node is a module; importing
``a.b.c`` is an edge to ``a.b.c`` only (the implicit import of its parent packages is not
counted, as import-linter does). Layers, lowest first, as README's "Design" section lists
them: the edge runtime and helpers ← layers ← models ← config ← data ← runs ←
training / evaluation / tflite ← the Keras classifier ← predict and its Ray engine ← cli and
the package facade.
"""

from __future__ import annotations

import ast
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = {"kerascls": ROOT / "kerascls", "kerascls_edge": ROOT / "export" / "kerascls_edge"}

# Longest matching prefix wins; a module matching none fails the test (give it a rank).
RANKS = {
    "kerascls_edge": 0, "kerascls.utils": 0, "kerascls.errors": 0, "kerascls._version": 0,
    "kerascls.layers": 1,
    "kerascls.models": 2,
    "kerascls.config": 3,
    "kerascls.data": 4,
    "kerascls.runs": 5,
    "kerascls.training": 6, "kerascls.evaluation": 6, "kerascls.tflite": 6,
    "kerascls.summary": 6,
    "kerascls.keras_classifier": 7,
    "kerascls.predict": 8, "kerascls.ray_predict": 8,
    "kerascls.cli": 9, "kerascls": 9,
}

# Known exceptions, each being removed by open work; anything new fails. Delete an entry
# when its edge is gone (the test warns about stale entries).
ALLOWED_UPWARD: dict[tuple[str, str], str] = {}
ALLOWED_CYCLES: dict[tuple[str, ...], str] = {}


def module_files() -> dict[str, Path]:
    """Dotted module name → file, for every .py under the two packages."""
    out = {}
    for top, folder in SOURCES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = [top, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a (possibly relative) ``from … import`` names."""
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    base = parts[: len(parts) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: set[str]) -> dict[str, int]:
    """Our modules ``name`` imports (anywhere in the file) → first line doing so."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: dict[str, int] = {}
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                       for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # ``import a.b.attr`` → ``a.b``
                target = target.rpartition(".")[0]
            if target and target != name:
                found.setdefault(target, node.lineno)
    return found


def import_graph() -> dict[str, dict[str, int]]:
    files = module_files()
    return {name: imports_of(name, path, set(files)) for name, path in files.items()}


def rank(module: str) -> int:
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        if ".".join(parts[:n]) in RANKS:
            return RANKS[".".join(parts[:n])]
    raise KeyError(module)


def cycles(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for nxt in edges:
                if nxt not in index:
                    index[nxt] = low[nxt] = len(index)
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(graph.get(nxt, {})))))
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def cycle_path(graph: dict[str, dict[str, int]], members: list[str]) -> str:
    """One closed walk through a component, with the line of each import, for the message."""
    inside = set(members)
    start = members[0]
    path, seen = [start], {start}
    node = start
    while True:
        nxt = sorted(m for m in graph[node] if m in inside)
        back = [m for m in nxt if m == start]
        step = back[0] if back and len(path) > 1 else next((m for m in nxt if m not in seen),
                                                             start)
        path.append(f"{step} (line {graph[node][step]} of {node})")
        if step == start:
            return " -> ".join(path)
        seen.add(step)
        node = step


GRAPH = import_graph()


def test_graph_is_read():
    """Guards the parser: known edges must be found, function-level ones included."""
    assert "kerascls.layers.standardize" in GRAPH["kerascls.layers.norm"]
    assert "kerascls.models.alexnet" in GRAPH["kerascls.models.registry"]  # inside a function
    assert len(GRAPH) > 60


def test_every_module_has_a_rank():
    unranked = []
    for module in GRAPH:
        try:
            rank(module)
        except KeyError:
            unranked.append(module)
    assert not unranked, f"give these modules a layer in RANKS: {unranked}"


def test_no_import_cycles():
    found = [c for c in cycles(GRAPH) if tuple(c) not in ALLOWED_CYCLES]
    assert not found, "import cycles:\n" + "\n".join(cycle_path(GRAPH, c) for c in found)


def test_imports_point_downward():
    upward = [f"{a} (rank {rank(a)}) imports {b} (rank {rank(b)}) at line {line}"
              for a, targets in GRAPH.items() for b, line in targets.items()
              if rank(b) > rank(a) and (a, b) not in ALLOWED_UPWARD]
    assert not upward, "imports pointing up a layer:\n" + "\n".join(upward)


def test_allow_lists_are_current():
    """Warn (not fail: other work removes them) about allow-list entries that are gone."""
    now = {tuple(c) for c in cycles(GRAPH)}
    stale = [c for c in ALLOWED_CYCLES if c not in now]
    stale += [e for e in ALLOWED_UPWARD if e[1] not in GRAPH.get(e[0], {})]
    for entry in stale:
        warnings.warn(f"tests/test_imports.py: {entry} no longer occurs; delete it from the "
                      "allow-list", stacklevel=1)


def test_the_check_sees_a_cycle():
    """The detector itself: a two-module loop and a three-module loop are reported."""
    graph = {"a": {"b": 1}, "b": {"a": 2}, "c": {"d": 1}, "d": {"e": 1}, "e": {"c": 3},
             "f": {"a": 1}}
    assert cycles(graph) == [["a", "b"], ["c", "d", "e"]]
    assert cycle_path(graph, ["c", "d", "e"]).startswith("c -> d (line 1 of c)")


def test_no_test_module_imports_another():
    """Shared fixtures live in tests/conftest.py, shared helpers in tests/<helper>.py; a test
    module importing another test module runs (and couples to) that module's globals."""
    found = []
    for path in sorted((ROOT / "tests").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            names += [a.name for a in node.names] if isinstance(node, ast.ImportFrom) else []
            if any(n.split(".")[-1].startswith("test_") for n in names):
                found.append(f"tests/{path.name}:{node.lineno}")
    assert not found, "test modules importing test modules:\n" + "\n".join(found)
