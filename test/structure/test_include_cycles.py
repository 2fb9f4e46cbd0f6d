"""The source tree has no include cycle between its modules. A module is a header
and the source file of the same name (src/pg/shared_cache.hpp + .cpp; a public
header include/pg_envelope/x.hpp and its implementation src/*/x.cpp); module A
depends on module B when a file of A includes a file of B. The dependencies must
form a directed acyclic graph (the issue found shared_cache <-> shared_state and
shared_cache <-> kms_registry). Includes resolve as the compiler resolves them: next
to the including file first, then -Iinclude and -Isrc (Makefile, CMakeLists.txt).
"""
from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
ROOTS = [REPO / "include", REPO / "src"]
INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def source_files() -> list[Path]:
    return sorted(p for root in ROOTS for p in root.rglob("*") if p.suffix in (".hpp", ".h", ".cpp"))


def resolve(including: Path, name: str) -> Path | None:
    for base in (including.parent, *ROOTS):
        candidate = (base / name).resolve()
        if candidate.is_file():
            return candidate
    return None


def module_of(path: Path, public_headers: dict[str, Path]) -> Path:
    """The module a file belongs to: its path without suffix; a .cpp that implements a
    public header include/pg_envelope/<stem>.hpp belongs to that header's module."""
    path = path.resolve()
    if path.suffix == ".cpp" and path.stem in public_headers and not path.with_suffix(".hpp").exists():
        return public_headers[path.stem]
    return path.with_suffix("")


def include_graph(files: list[Path]) -> dict[Path, set[Path]]:
    public = {p.stem: p.resolve().with_suffix("") for p in (REPO / "include").rglob("*.hpp")}
    graph: dict[Path, set[Path]] = {}
    for f in files:
        module = module_of(f, public)
        targets = graph.setdefault(module, set())
        for name in INCLUDE.findall(f.read_text(errors="replace")):
            target = resolve(f, name)
            if target is not None and any(root in target.parents for root in ROOTS):
                dep = module_of(target, public)
                if dep != module:
                    targets.add(dep)
    return graph


def cycles(graph: dict[Path, set[Path]]) -> list[list[Path]]:
    """Strongly connected components with more than one file (or a self-include)."""
    index: dict[Path, int] = {}
    low: dict[Path, int] = {}
    stack: list[Path] = []
    on_stack: set[Path] = set()
    found: list[list[Path]] = []

    def visit(v: Path) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1 or v in graph.get(v, ()):
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_include_cycle():
    graph = include_graph(source_files())
    assert len(graph) > 30, "the source tree was not found"
    found = cycles(graph)
    assert not found, "include cycles:\n" + "\n".join(
        " <-> ".join(str(p.relative_to(REPO)) for p in c) for c in found)


def test_the_checker_finds_a_cycle(tmp_path):
    """The check is not blind: a two-file cycle and a self-include are found."""
    a, b, c = tmp_path / "a.hpp", tmp_path / "b.hpp", tmp_path / "c.hpp"
    graph = {a: {b}, b: {a}, c: {c}}
    assert sorted(map(len, cycles(graph))) == [1, 2]
    assert cycles({a: {b}, b: set()}) == []
