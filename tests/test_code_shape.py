"""The shape rules of flexbert/ stay true: modules under 300 lines, functions under 60, no
import circle between flexbert modules (module-level imports, read from the AST)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "flexbert"
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _module_imports(name: str, path: Path, known: set[str]) -> set[str]:
    """flexbert modules imported at module level (not inside functions) by ``name``."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in tree.body:  # top level only: a lazy import inside a function does not circle
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        else:
            continue
        found.update(t for t in targets if t in known and t != name)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``graph`` as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_find_cycle_detects_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def _too_long() -> dict[str, dict[str, int]]:
    """Per module (path from the repo root): what breaks a limit -> its length in lines."""
    out: dict[str, dict[str, int]] = {}
    for path in _modules().values():
        rel, text = str(path.relative_to(PKG.parent)), path.read_text()
        if len(text.splitlines()) >= MAX_MODULE_LINES:
            out.setdefault(rel, {})["module"] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.setdefault(rel, {})[f"{node.name}() at line {node.lineno}"] = n
    return out


def test_modules_and_functions_are_short():
    bad = _too_long()
    assert not bad, f"modules must be < {MAX_MODULE_LINES} lines, functions <= {MAX_FUNCTION_LINES}: {bad}"


def test_no_import_circle():
    modules = _modules()
    graph = {name: _module_imports(name, path, set(modules)) for name, path in modules.items()}
    # a package's __init__ importing its own submodules is not a circle with them
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".") or modules[m].name != "__init__.py"}
    assert find_cycle(graph) is None, f"import circle: {' -> '.join(find_cycle(graph))}"


@pytest.mark.parametrize("name", ["IGNORE_INDEX = "])
def test_one_owner(name):
    owners = [str(p.relative_to(PKG.parent)) for p in _modules().values() if name in p.read_text()]
    assert owners == ["flexbert/config.py"], owners
