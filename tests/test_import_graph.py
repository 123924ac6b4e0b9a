"""The project's import graph: which of its modules import which, read from the source with ``ast``.

Every ``import`` and ``from ... import`` counts wherever it stands: at module level, in a function, under
``if TYPE_CHECKING``, in a ``try``. ``from pkg import name`` is an edge to ``pkg.name`` when that is a
module of the project, else to ``pkg``; ``import a.b.c`` is an edge to the longest prefix that is one.
A package's ``__init__`` is not implied by importing one of its modules (as import-linter reads it).
Dynamic imports (``importlib.import_module``) are not seen.

Checked: no import cycle at all among ``featurestore.ingest``'s modules; no import of
``featurestore.synth`` from ``featurestore.ingest``; and in the whole graph no cycle that does not go
through one of the imports listed in ``ALLOWED_BACK_EDGES`` (with those edges taken out the graph must be
acyclic, and each of them must still close a cycle, so the list stays exact).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("featurestore", "loaders", "models", "bench")

# The imports (importer, imported) that the project's remaining cycles go through, each with why it is
# tolerated. A cycle through none of them fails the check, as does an entry that no longer closes a cycle.
ALLOWED_BACK_EDGES: dict[tuple[str, str], str] = {
    # ``common.run`` (the console entry point) calls ``from . import main`` when it runs: the package's
    # ``__init__`` imports ``common`` and every command module, each of which imports ``common``. Harmless
    # at run time (the package is loaded before ``run`` is called); not part of the ingest clean-up.
    ("featurestore.cli.common", "featurestore.cli"): "run() imports main lazily",
    # The synthetic MSSD writer computes the test sessions' Bayes probabilities with the planted model's
    # own terms (``spotify_bayes`` reads them from ``spotify``, one definition of the truth); it imports
    # the numba kernel only when it writes a test split, so a synth without one never compiles it.
    ("featurestore.synth.spotify", "featurestore.synth.spotify_bayes"): "the Bayes kernel, imported lazily",
}

Graph = Mapping[str, set[str]]


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every ``.py`` under ``packages`` (``pkg/__init__.py``: ``pkg``)."""
    out = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            out[".".join(parts)] = path
    return out


def _resolve(name: str, modules: Iterable[str]) -> str | None:
    """The longest prefix of the dotted ``name`` that is a project module (None: not the project's)."""
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in modules:
            return candidate
    return None


def imports_of(module: str, source: str, is_package: bool, modules: Iterable[str]) -> set[str]:
    """The project modules that ``source`` (module ``module``) imports, anywhere in its body."""
    modules = set(modules)
    package = module if is_package else module.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = package.split(".")
                base_parts = base_parts[: len(base_parts) - (node.level - 1)]
                base = ".".join([*base_parts, *([node.module] if node.module else [])])
            else:
                base = node.module or ""
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        out |= {t for t in map(lambda n: _resolve(n, modules), targets) if t is not None and t != module}
    return out


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    files = module_files(root, packages)
    return {m: imports_of(m, p.read_text(encoding="utf-8"), p.name == "__init__.py", files)
            for m, p in files.items()}


def strongly_connected(graph: Graph) -> list[set[str]]:
    """Tarjan's strongly connected components of ``graph`` with more than one module: its import cycles
    (a module importing itself is no edge here). Iterative: no recursion limit."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[set[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(component)
    return out


def cycle_edges(graph: Graph) -> set[tuple[str, str]]:
    """Every edge that lies on an import cycle: the edges inside a strongly connected component."""
    edges = set()
    for component in strongly_connected(graph):
        edges |= {(a, b) for a in component for b in graph.get(a, ()) if b in component}
    return edges


def _describe(edges: Iterable[tuple[str, str]]) -> str:
    return "\n".join(f"  {a} -> {b}" for a, b in sorted(edges))


# --- the cycle finder itself -------------------------------------------------------------------------

def test_cycle_finder_finds_a_planted_cycle_and_nothing_else():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(), "e": {"d"}}
    assert strongly_connected(graph) == [{"a", "b", "c"}]
    assert cycle_edges(graph) == {("a", "b"), ("b", "c"), ("c", "a")}
    assert strongly_connected({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    two = {"x": {"y"}, "y": {"x"}, "p": {"q"}, "q": {"p"}}
    assert sorted(map(sorted, strongly_connected(two))) == [["p", "q"], ["x", "y"]]


def test_graph_reader_sees_function_level_and_relative_imports(tmp_path):
    """A cycle made only by an import inside a function, written relatively, is found."""
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "a.py").write_text("from . import b\n")
    (pkg / "sub" / "b.py").write_text("import os\n\ndef f():\n    from ..sub.a import thing\n    return thing\n")
    (pkg / "c.py").write_text("from pkg.sub import a\nimport pkg.sub.b as bb\nfrom .sub.a import x, y\n")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.sub.a"] == {"pkg.sub.b"}
    assert graph["pkg.sub.b"] == {"pkg.sub.a"}
    assert graph["pkg.c"] == {"pkg.sub.a", "pkg.sub.b"}
    assert strongly_connected(graph) == [{"pkg.sub.a", "pkg.sub.b"}]


# --- the project -------------------------------------------------------------------------------------

def test_every_listed_package_is_read():
    graph = import_graph()
    assert {m.split(".")[0] for m in graph} == set(PACKAGES)
    assert "featurestore.ingest.distributed" in graph["featurestore.ingest.spotify"]  # a function-level import


def test_no_import_cycles_but_through_the_listed_imports():
    graph = import_graph()
    missing = set(ALLOWED_BACK_EDGES) - {(a, b) for a, targets in graph.items() for b in targets}
    assert not missing, f"ALLOWED_BACK_EDGES lists imports that are gone (remove them):\n{_describe(missing)}"
    cut = {a: {b for b in targets if (a, b) not in ALLOWED_BACK_EDGES} for a, targets in graph.items()}
    cycles = strongly_connected(cut)
    assert not cycles, "import cycles, through no import of ALLOWED_BACK_EDGES:\n" + _describe(cycle_edges(cut))
    stale = {e for e in ALLOWED_BACK_EDGES if e not in cycle_edges(graph)}
    assert not stale, f"ALLOWED_BACK_EDGES lists imports on no cycle (remove them):\n{_describe(stale)}"


def test_no_cycle_among_ingest_modules():
    graph = import_graph()
    ingest = {m: {t for t in targets if t.startswith("featurestore.ingest")}
              for m, targets in graph.items() if m.startswith("featurestore.ingest")}
    assert strongly_connected(ingest) == []


def test_ingest_does_not_import_synth():
    graph = import_graph()
    up = {(m, t) for m, targets in graph.items() if m.startswith("featurestore.ingest")
          for t in targets if t == "featurestore.synth" or t.startswith("featurestore.synth.")}
    assert not up, f"featurestore.ingest imports featurestore.synth:\n{_describe(up)}"
