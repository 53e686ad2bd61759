"""The package's import graph, read from the source (``ast``, nothing is
imported): no import circle between modules and no arrow back up (no module
imports the package ``__init__`` or an ancestor package's ``__init__`` for a
name), and no package file over 600 lines.

An edge ``A -> B`` is an ``import``/``from ... import`` in module ``A`` that
makes Python execute module ``B``: ``from P import x`` is an edge to ``P.x``
when ``P.x`` is a module, else to ``P`` (for the name ``x``); the parent
packages Python runs on the way are not edges. Imports under
``if TYPE_CHECKING:`` are not edges. "Module level" is every import outside a
function body; "lazy" is one inside a function (run on first call).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "jaxconvviz"
#: The packages whose graphs are read: the library and the checkout's
#: benchmarks (not in the wheel); an import from one into the other is not
#: an edge of either graph.
PACKAGES = ("jaxconvviz", "benchmarks")
MAX_LINES = 600
#: Modules whose ``import jaxconvviz as jcv`` (lazy, in the CAM and
#: feature-visualization parts of the report) the 1.0 refactor replaces on
#: other branches (issue 33); the merge empties this set.
BACK_UP_PENDING: set[str] = set()
#: Files being split by the 1.0 refactor on other branches (issue 33); the
#: merge empties this set.
SPLIT_PENDING: set[str] = set()


def _module_files() -> dict[str, Path]:
    out = {}
    for f in sorted(f for pkg in PACKAGES for f in (ROOT / pkg).rglob("*.py")):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = f
    return out


MODULES = _module_files()


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _known(name: str) -> str | None:
    """``name`` or its nearest ancestor that is a module of the package."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(node: ast.AST, lazy: bool = False) -> Iterator[tuple[ast.stmt, bool]]:
    """Every import statement under ``node`` with whether it is in a function."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from ((s, lazy) for n in child.orelse for s, _ in _imports(n))
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, lazy
        inner = lazy or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                           ast.Lambda))
        yield from _imports(child, inner)


def _targets(module: str, stmt: ast.stmt) -> Iterator[tuple[str, str | None]]:
    """``(target module, name)`` for each module ``stmt`` runs; ``name`` is
    the name taken from a package ``__init__`` (``"*"``: ``import jaxconvviz``,
    the whole public surface), None otherwise."""
    if isinstance(stmt, ast.Import):
        for alias in stmt.names:
            top = alias.name.split(".")[0]
            if top != module.split(".")[0]:
                continue
            if alias.name == top:  # the package __init__, for its names
                yield top, "*"
            else:
                yield _known(alias.name), None
        return
    assert isinstance(stmt, ast.ImportFrom)
    if stmt.level:  # relative: from the module's own package upwards
        base = module if _is_package(module) else module.rpartition(".")[0]
        for _ in range(stmt.level - 1):
            base = base.rpartition(".")[0]
        src = f"{base}.{stmt.module}" if stmt.module else base
    else:
        src = stmt.module or ""
    if src.split(".")[0] != module.split(".")[0]:
        return
    for alias in stmt.names:
        sub = f"{src}.{alias.name}"
        if sub in MODULES:
            yield sub, None
        else:
            yield _known(src), alias.name


def _graph() -> list[tuple[str, str, str | None, bool, int]]:
    """Every edge ``(importer, imported, name, lazy, line)``."""
    edges = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text(), str(path))
        for stmt, lazy in _imports(tree):
            for target, name in _targets(module, stmt):
                if target and target != module:
                    edges.append((module, target, name, lazy, stmt.lineno))
    return edges


EDGES = _graph()


def _circles(lazy: bool) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    succ: dict[str, set[str]] = {m: set() for m in MODULES}
    for a, b, _, is_lazy, _ in EDGES:
        if lazy or not is_lazy:
            succ[a].add(b)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(succ[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(MODULES):
        if v not in index:
            visit(v)
    return sorted(out)


def _describe(comp: list[str], lazy: bool) -> str:
    inside = set(comp)
    arrows = sorted(f"{a} -> {b} (line {n}{', lazy' if is_lazy else ''})"
                    for a, b, _, is_lazy, n in EDGES
                    if a in inside and b in inside and (lazy or not is_lazy))
    return "; ".join(arrows)


def test_the_graph_is_read():
    """The reader sees the imports it must (a guard against a test that
    passes because it found nothing)."""
    assert "jaxconvviz.featureviz.render" in MODULES
    assert "jaxconvviz.commands" in MODULES and _is_package("jaxconvviz.commands")
    pairs = {(a, b) for a, b, *_ in EDGES}
    assert ("jaxconvviz", "jaxconvviz._version") in pairs
    assert ("benchmarks.cases", "benchmarks.filter_cases") in pairs
    assert not [(a, b) for a, b in pairs if a.split(".")[0] != b.split(".")[0]]
    assert ("jaxconvviz.commands", "jaxconvviz.commands.render") in pairs
    assert len(EDGES) > 200


def test_no_import_circle_at_module_level():
    circles = _circles(lazy=False)
    assert circles == [], "\n".join(_describe(c, False) for c in circles)


def test_no_import_circle_through_lazy_imports():
    """Lazy imports count too: a function-level import that closes a circle
    (imported on first call, so Python does not fail) still means two
    modules each need the other, and the layering reads only one way."""
    circles = _circles(lazy=True)
    assert circles == [], "\n".join(_describe(c, True) for c in circles)


def test_no_arrow_back_up():
    """No module takes a name from the package ``__init__`` (``from
    jaxconvviz import x``, ``import jaxconvviz as jcv``) or from the
    ``__init__`` of a package it is inside (lazy imports included): the
    package ``__init__`` only re-exports, and a name lives in a module."""
    bad = []
    for a, b, name, is_lazy, n in EDGES:
        if name is None or not _is_package(b) or a in BACK_UP_PENDING:
            continue
        if b in PACKAGES or a.startswith(b + "."):
            bad.append(f"{a}:{n} takes {name!r} from {b}"
                       f"{' (lazy)' if is_lazy else ''}")
    assert bad == []


def test_no_package_file_over_600_lines():
    long = {str(p.relative_to(ROOT)): n for p in PKG.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert set(long) <= SPLIT_PENDING, long
