"""The import graph: no cycles, and the layers point one way (commands -> ops -> io, models).

The graph is built from the source with ast (the module-level imports only: an import inside a
function runs later, when everything is loaded), so a cycle is named even when the import order
of the day happens not to trip on it. Then every module is imported in a fresh interpreter.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import llmtools

PACKAGE = Path(llmtools.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _top_level_imports(tree: ast.Module) -> list[ast.stmt]:
    """Import statements that run when the module is imported (not under `if TYPE_CHECKING`)."""
    found: list[ast.stmt] = []

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append(node)
            elif isinstance(node, ast.If):
                if not (isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING"):
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                    visit(block)

    visit(tree.body)
    return found


def _imports_of(name: str, path: Path, everywhere: bool = False) -> set[str]:
    """The llmtools modules `name` imports at module level, or `everywhere` (function bodies
    too). `from pkg import sub` counts as an import of pkg.sub."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text(encoding="utf-8"))
    nodes = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))] if everywhere else _top_level_imports(tree)
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
            continue
        base = node.module or ""
        if node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
        for alias in node.names:
            out.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    return {m for m in out if m in MODULES and m != name}


def import_graph(everywhere: bool = False) -> dict[str, set[str]]:
    return {name: _imports_of(name, path, everywhere) for name, path in MODULES.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_no_import_cycle():
    graph = import_graph()
    assert len(graph) > 60 and graph["llmtools.ops.serve.app"], "the graph was not built"
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_layers_point_one_way():
    """ops never imports commands; models never imports ops; nothing outside an ops package
    imports its inner modules (commands use the package's names)."""
    wrong = []
    for name, deps in import_graph(everywhere=True).items():
        for dep in deps:
            if name.startswith("llmtools.ops") and dep.startswith("llmtools.commands"):
                wrong.append((name, dep))
            if name.startswith("llmtools.models") and dep.startswith(("llmtools.ops", "llmtools.commands")):
                wrong.append((name, dep))
            own = name.split(".")[:3]
            if dep.startswith("llmtools.ops.") and dep.count(".") >= 3 and dep.split(".")[:3] != own:
                wrong.append((name, dep))  # another package's inner module
            if name.startswith("llmtools.commands") and dep.startswith("llmtools.ops.") and dep.count(".") >= 3:
                wrong.append((name, dep))
    assert not wrong


IMPORT_EACH = """
import importlib, sys
failed = []
for name in sys.argv[1:]:
    for loaded in [m for m in sys.modules if m == "llmtools" or m.startswith("llmtools.")]:
        del sys.modules[loaded]
    try:
        importlib.import_module(name)
    except Exception as exc:
        failed.append(f"{name}: {type(exc).__name__}: {exc}")
print("\\n".join(failed))
"""


@pytest.mark.slow
def test_every_module_imports_on_its_own():
    """Each module imported first, with no llmtools module loaded before it: an import cycle that
    only bites in one order shows here."""
    names = [m for m in MODULES if not m.endswith("__main__")]
    proc = subprocess.run([sys.executable, "-c", IMPORT_EACH, *names], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == ""
