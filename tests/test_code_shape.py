"""The shape rules of the house stay true, read from the code's AST:

* layers: a module imports only from its own package or the layers below it, in EVERY import
  (module level, inside functions, under ``TYPE_CHECKING``, ``importlib.import_module("...")``);
  model/ and data/ never import each other (the table is docs/internals.md's);
* no import circle between flexbert modules, lazy imports included;
* modules under 300 lines; functions at most 60 lines, in flexbert/, scripts/ and data_prep/;
* one owner of the label-ignore value;
* imports at the top of the file: a function-local import is allowed only for a named optional
  dependency (``OPTIONAL_DEPENDENCIES``) or, at most ``MAX_LOCAL_OWN_IMPORTS`` times, for one of
  flexbert's own modules with a comment saying why.

The checkers take a root folder, so the guard tests below run them on small packages they write.
"""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAX_MODULE_LINES = 300
MAX_FUNCTION_LINES = 60

# The layers, lowest first (docs/internals.md).  A module may import its own package and any
# package of a lower layer; packages sharing a layer never import each other.
LAYERS: list[tuple[str, ...]] = [
    ("flexbert.errors",),
    ("flexbert.registry", "flexbert.env"),
    ("flexbert.config",),
    ("flexbert.model", "flexbert.data"),
    ("flexbert.convert",),
    ("flexbert.train",),
    ("flexbert.weights",),
    ("flexbert.eval",),
    ("flexbert.experiments",),
    ("flexbert.cli",),
    ("flexbert",),  # flexbert/__init__.py, __main__.py: the public names and `python -m flexbert`
    ("scripts", "data_prep"),
]


def modules(root: Path, top: str = "flexbert") -> dict[str, Path]:
    """Dotted module name -> file for every .py under ``root/top``."""
    out = {}
    for path in sorted((root / top).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _import_module_target(node: ast.Call):
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", "")
    if name == "import_module" and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
        return node.args[0].value
    return None


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every module of ``known`` that ``name`` imports, anywhere in the file."""
    tree = ast.parse(path.read_text())
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            targets = [base] + [f"{base}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Call) and _import_module_target(node):
            targets = [_import_module_target(node)]
        else:
            continue
        for t in targets:  # ``import a.b.c`` also needs a.b and a
            while t:
                if t in known and t != name:
                    found.add(t)
                    break
                t = t.rpartition(".")[0]
    return found


def import_graph(root: Path, tops=("flexbert",)) -> dict[str, set[str]]:
    mods: dict[str, Path] = {}
    for top in tops:
        mods.update(modules(root, top) if (root / top).exists() else {})
    graph = {n: imports(n, p, set(mods)) for n, p in mods.items()}
    # a package's __init__ naming its own submodules is not a circle with them
    for n in graph:
        graph[n] = {m for m in graph[n] if not (m.startswith(n + ".") and mods[n].name == "__init__.py")}
    return graph


def layer_of(module: str, layers=LAYERS) -> tuple[int, str]:
    """(layer index, package) of a module: the longest package prefix in the table."""
    best = (-1, "")
    for i, group in enumerate(layers):
        for pkg in group:
            if (module == pkg or module.startswith(pkg + ".")) and len(pkg) > len(best[1]):
                best = (i, pkg)
    return best


def layer_violations(graph: dict[str, set[str]], layers=LAYERS) -> list[str]:
    bad = []
    for src, targets in sorted(graph.items()):
        ls, ps = layer_of(src, layers)
        for dst in sorted(targets):
            ld, pd = layer_of(dst, layers)
            if ps == pd or ld < ls:
                continue
            bad.append(f"{src} -> {dst} ({ps} may not import {pd})")
    return bad


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


def too_long(paths) -> dict[str, dict[str, int]]:
    """Per file: what breaks a limit -> its length in lines."""
    out: dict[str, dict[str, int]] = {}
    for path in paths:
        rel, text = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path), path.read_text()
        if len(text.splitlines()) >= MAX_MODULE_LINES:
            out.setdefault(rel, {})["module"] = len(text.splitlines())
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    out.setdefault(rel, {})[f"{node.name}() at line {node.lineno}"] = n
    return out


# --------------------------------------------------------------------------- the rules, on the repo
def test_every_import_follows_the_layers():
    graph = import_graph(ROOT, ("flexbert", "scripts", "data_prep"))
    bad = layer_violations(graph)
    assert not bad, "imports against the layer order (docs/internals.md):\n" + "\n".join(bad)


def test_no_import_circle_even_through_lazy_imports():
    graph = import_graph(ROOT)
    cycle = find_cycle(graph)
    assert cycle is None, f"import circle: {' -> '.join(cycle)}"


def test_modules_and_functions_are_short():
    paths = [*(ROOT / "flexbert").rglob("*.py"), *(ROOT / "scripts").glob("*.py"), *(ROOT / "data_prep").glob("*.py")]
    bad = too_long(paths)
    assert not bad, f"modules must be < {MAX_MODULE_LINES} lines, functions <= {MAX_FUNCTION_LINES}: {bad}"


COMPOSER_USERS = ("flexbert.train.", "flexbert.eval.classifier")  # the pretraining run; fine-tuning's Trainer


def test_composer_only_in_train():
    """docs/internals.md: flexbert/train/ (and classification fine-tuning's Trainer) import Composer."""
    users = set()
    for name, path in modules(ROOT).items():
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            if any(m == "composer" or m.startswith("composer.") for m in mods):
                users.add(name)
    assert users and all(u.startswith(COMPOSER_USERS) for u in users), sorted(users)


# Third-party packages a function may import: optional extras, or only present on some machines.
OPTIONAL_DEPENDENCIES = {
    "wandb": "the wandb logger, when asked for", "liger_kernel": "'flexbert[liger]', CUDA only",
    "flash_attn": "'flexbert[flash]', CUDA only", "torch.nn.attention.flex_attention": "FlexAttention (newer torch)",
    "torch.nn.attention.varlen": "torch's varlen attention (torch >= 2.10)", "bm25s": "'flexbert[retrieval]'",
    "sentence_transformers": "'flexbert[retrieval]' / 'flexbert[sentence]'", "datasets": "'flexbert[retrieval]'",
    "mteb": "MTEB evaluation, optional", "matplotlib": "plots (Agg), only when a report is drawn",
    "streaming.base.storage": "object-store I/O only (importing streaming loads its whole package: seconds)",
    "pyarrow": "'flexbert[parquet]'", "zstandard": ".zst inputs", "boto3": "object stores", "botocore": "object stores",
}
MAX_LOCAL_OWN_IMPORTS = 10


def local_imports(paths) -> list[tuple[str, int, str, bool, str]]:
    """(file, line, module, explained, function) of every import inside a function; ``explained``:
    a comment on the line or in the lines just above it."""
    out = []
    for path in paths:
        text = path.read_text()
        lines = text.splitlines()
        for fn in ast.walk(ast.parse(text)):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(fn):
                if isinstance(node, (ast.Import, ast.ImportFrom)):
                    module = node.module or "" if isinstance(node, ast.ImportFrom) else node.names[0].name
                    above = [ln.strip() for ln in lines[max(0, node.lineno - 4): node.lineno - 1]]
                    explained = "#" in lines[node.lineno - 1] or any(ln.startswith("#") for ln in above[-3:])
                    rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
                    out.append((rel, node.lineno, module, explained, fn.name))
    return out


def import_rule_violations(paths) -> list[str]:
    bad, own = [], []
    for rel, line, module, explained, function in local_imports(paths):
        if module == "flexbert" or module.startswith("flexbert."):
            command_run = "flexbert/cli/" in rel and function == "run"
            if not (command_run and explained):  # a command's run() imports its implementation: --help answers at once
                own.append(f"{rel}:{line} {module}")
            if not explained:
                bad.append(f"{rel}:{line}: a function-local import of {module} says not why (a comment on or above it)")
        elif not any(module == d or module.startswith(d + ".") for d in OPTIONAL_DEPENDENCIES):
            bad.append(f"{rel}:{line}: {module} is imported inside a function; import it at the top of the file "
                       "(only OPTIONAL_DEPENDENCIES may be imported on use)")
    if len(own) > MAX_LOCAL_OWN_IMPORTS:
        bad.append(f"{len(own)} function-local imports of flexbert's own modules (at most {MAX_LOCAL_OWN_IMPORTS}): {own}")
    return bad


def test_imports_are_at_the_top():
    bad = import_rule_violations((ROOT / "flexbert").rglob("*.py"))
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("name", ["IGNORE_INDEX = "])
def test_one_owner(name):
    owners = [str(p.relative_to(ROOT)) for p in modules(ROOT).values() if name in p.read_text()]
    assert owners == ["flexbert/config.py"], owners


# --------------------------------------------------------------------------- guard cases
def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    for d in {p.parent for p in tmp_path.rglob("*.py")}:
        (d / "__init__.py").touch()
    return tmp_path


def test_guard_a_function_level_import_against_the_order_fails(tmp_path):
    root = _package(tmp_path, {
        "flexbert/model/layer.py": "def build():\n    from flexbert.train.recipe import build_model\n    return build_model\n",
        "flexbert/model/ok.py": "from flexbert.config import IGNORE_INDEX\n",
        "flexbert/train/recipe.py": "def build_model():\n    return 1\n",
        "flexbert/config.py": "IGNORE_INDEX = -100\n",
    })
    assert layer_violations(import_graph(root)) == [
        "flexbert.model.layer -> flexbert.train.recipe (flexbert.model may not import flexbert.train)"]


def test_guard_type_checking_and_import_module_are_imports_too(tmp_path):
    root = _package(tmp_path, {
        "flexbert/data/a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from flexbert.model.m import X\n",
        "flexbert/data/b.py": "import importlib\ndef f():\n    return importlib.import_module('flexbert.model.m')\n",
        "flexbert/model/m.py": "X = 1\n",
    })
    assert layer_violations(import_graph(root)) == [
        "flexbert.data.a -> flexbert.model.m (flexbert.data may not import flexbert.model)",
        "flexbert.data.b -> flexbert.model.m (flexbert.data may not import flexbert.model)"]


def test_guard_a_circle_of_lazy_imports_fails(tmp_path):
    root = _package(tmp_path, {
        "flexbert/data/config.py": "def load():\n    from flexbert.data.streams import load_streams\n    return load_streams\n",
        "flexbert/data/streams.py": "def load_streams():\n    from flexbert.data import config\n    return config\n",
    })
    assert find_cycle(import_graph(root)) == ["flexbert.data.config", "flexbert.data.streams", "flexbert.data.config"]


def test_guard_a_long_script_function_fails(tmp_path):
    script = tmp_path / "scripts" / "long.py"
    script.parent.mkdir()
    script.write_text("def main():\n" + "    x = 1\n" * 61)
    assert list(too_long([script]).values()) == [{"main() at line 1": 62}]


def test_guard_a_planted_local_import_fails(tmp_path):
    root = _package(tmp_path, {
        "flexbert/train/a.py": "def f():\n    from flexbert.train.b import g\n    return g\n",
        "flexbert/train/b.py": "def g():\n    # deferred: heavy\n    from flexbert.train.a import f\n    import json\n    import bm25s\n    return f\n",
    })
    bad = import_rule_violations(sorted((root / "flexbert").rglob("*.py")))
    assert [b.split(": ", 1)[0] for b in bad] == [f"{root}/flexbert/train/a.py:2", f"{root}/flexbert/train/b.py:4"], bad
    assert "says not why" in bad[0] and "json is imported inside a function" in bad[1]


def test_find_cycle_detects_a_circle_and_accepts_a_tree():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b", "c"}, "b": {"c"}, "c": set()}) is None


def test_the_docs_list_the_callbacks_in_their_event_order():
    from flexbert.train.callback_table import markdown_table

    assert markdown_table() in (ROOT / "docs" / "training.md").read_text()


MAX_TRAIN_MODULES = 22  # flexbert/train/ holds the Composer run only (issue 25: it had 35 files)


def test_train_holds_the_run_and_no_more_than_its_modules():
    """flexbert/train/ stays the Composer pretraining run: at most MAX_TRAIN_MODULES modules
    (__init__ included), none named for a weight tool, an evaluation or a launcher."""
    names = sorted(p.name for p in (ROOT / "flexbert" / "train").glob("*.py"))
    assert len(names) <= MAX_TRAIN_MODULES, f"{len(names)} modules in flexbert/train/ (at most {MAX_TRAIN_MODULES}): {names}"
    elsewhere = {"export", "averaging", "merging", "tiling", "pruning", "jobs", "phases", "sweep", "mlm_eval", "classifier"}
    assert not elsewhere & {n[:-3] for n in names}, names
