"""The layout holds: no import cycle inside processor/, dsl/ imports nothing from processor/,
and every module says what it owns.

The import graph is read from the source (every import statement, those inside
functions too), so a cycle cannot hide behind a deferred import.
"""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

ROOT = Path(__file__).resolve().parents[1]


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(top: str) -> nx.DiGraph:
    """Modules of package ``top`` and the first-party modules each imports."""
    files = {_module_name(p): p for p in (ROOT / top).rglob("*.py")}
    modules = set(files)
    graph = nx.DiGraph()
    for name, path in files.items():
        graph.add_node(name)
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    anchor = package.split(".")
                    base = ".".join(anchor[:len(anchor) - node.level + 1] + ([base] if base else []))
                # `from pkg import mod` imports the module pkg.mod; `from mod import name` imports mod
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            else:
                continue
            for target in targets:
                if target.split(".")[0] in ("processor", "dsl") and target != name:
                    graph.add_edge(name, target)
    return graph


def test_no_import_cycle_inside_processor():
    graph = import_graph("processor")
    inside = graph.subgraph(n for n in graph if n.startswith("processor"))
    cycles = list(nx.simple_cycles(inside))
    assert not cycles, "import cycles: " + "; ".join(" -> ".join([*c, c[0]]) for c in cycles)


def test_no_import_cycle_inside_dsl_and_dsl_never_imports_processor():
    graph = import_graph("dsl")
    assert not [e for e in graph.edges if e[1].startswith("processor")]
    assert not list(nx.simple_cycles(graph))


def test_the_graph_sees_deferred_and_relative_imports(tmp_path):
    # the check above is only as good as the graph: a cycle through a function-level import counts
    graph = import_graph("processor")
    assert graph.has_edge("processor.cli", "processor.pipeline")          # imported inside a function
    assert graph.has_edge("processor.pipeline", "processor.release")
    assert graph.has_edge("processor.localizer.window", "processor.localizer.evidence")  # `from pkg import mod`


def test_every_module_opens_with_a_docstring():
    missing = [str(p.relative_to(ROOT)) for top in ("processor", "dsl") for p in (ROOT / top).rglob("*.py")
               if p.stat().st_size and not ast.get_docstring(ast.parse(p.read_text(encoding="utf-8")))]
    assert not missing, f"modules without a docstring: {missing}"
