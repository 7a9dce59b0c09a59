"""Dependencies point one way: vocabulary <- model backends <- plain pipeline <- node classes.

Every module of the pack is parsed (never imported) and each of its imports resolved to the pack
module it names. The layer of a module is its folder:

    model_loaders/vocabulary/   shared vocabulary   imports nothing else of the pack
    model_loaders/              model backends      the vocabulary and each other
    nodes/pipeline/             plain pipeline      the two above and each other
    nodes/                      node classes        anything below
    __init__.py, __main__.py    the pack's entry    anything

A failure names the file and line of the import that points the wrong way.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
from cinereel_testkit import PACK_ROOT

LAYERS = ("vocabulary", "models", "pipeline", "nodes", "entry")
# What each layer may import from the pack (besides itself).
ALLOWED: dict[str, set[str]] = {
    "vocabulary": set(),
    "models": {"vocabulary"},
    "pipeline": {"vocabulary", "models"},
    "nodes": {"vocabulary", "models", "pipeline"},
    "entry": {"vocabulary", "models", "pipeline", "nodes"},
}
FIX = {
    "vocabulary": "the vocabulary imports nothing else of the pack: move what it needs into model_loaders/vocabulary/",
    "models": "a model backend never imports from nodes/: move the shared name into model_loaders/vocabulary/ "
              "(or model_loaders/ if only backends and the pipeline use it)",
    "pipeline": "the plain pipeline never imports a node module: move the shared code into nodes/pipeline/",
}


def layer_of(rel: Path) -> str:
    """The layer of a pack module, from its path relative to the pack root."""
    parts = rel.parts
    if parts[0] == "model_loaders":
        return "vocabulary" if len(parts) > 2 and parts[1] == "vocabulary" else "models"
    if parts[0] == "nodes":
        return "pipeline" if len(parts) > 2 and parts[1] == "pipeline" else "nodes"
    return "entry"


def module_parts(rel: Path) -> list[str]:
    """Dotted name of a module inside the pack, as parts (``nodes/pipeline/gate.py`` -> nodes, pipeline, gate)."""
    parts = list(rel.with_suffix("").parts)
    return parts[:-1] if parts[-1] == "__init__" else parts


def package_parts(rel: Path) -> list[str]:
    parts = module_parts(rel)
    return parts if rel.name == "__init__.py" else parts[:-1]


def imported_modules(rel: Path, source: str) -> list[tuple[int, list[str]]]:
    """(line, pack module parts) of every import in ``source`` that names a module of the pack.

    Relative imports are resolved against the module's package; ``from . import x`` yields ``x`` itself.
    Absolute imports cannot name the pack (ComfyUI imports it under any folder name), so they are not
    pack imports, except ``importlib.import_module`` with a literal relative name.
    """
    found: list[tuple[int, list[str]]] = []
    package = package_parts(rel)
    for node in ast.walk(ast.parse(source, filename=str(rel))):
        if isinstance(node, ast.ImportFrom) and node.level:
            if node.level - 1 > len(package):
                found.append((node.lineno, ["<outside the pack>"]))
                continue
            base = package[: len(package) - (node.level - 1)] + (node.module.split(".") if node.module else [])
            if node.module:
                found.append((node.lineno, base))
            else:
                found.extend((node.lineno, base + [alias.name]) for alias in node.names)
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", None)) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)
              and node.args[0].value.startswith(".")):
            name = node.args[0].value
            level = len(name) - len(name.lstrip("."))
            rest = [p for p in name.lstrip(".").split(".") if p]
            found.append((node.lineno, package[: len(package) - (level - 1)] + rest))
    return found


def layer_of_parts(parts: list[str]) -> str:
    if not parts or parts[0] not in ("model_loaders", "nodes"):
        return "entry"
    return layer_of(Path(*parts, "x.py")) if len(parts) > 1 else layer_of(Path(parts[0], "__init__.py"))


def violations(rel: Path, source: str) -> list[str]:
    own = layer_of(rel)
    problems = []
    for line, parts in imported_modules(rel, source):
        if parts == ["<outside the pack>"]:
            problems.append(f"{rel.as_posix()}:{line}: a relative import climbs above the pack root")
            continue
        target = layer_of_parts(parts)
        if target != own and target not in ALLOWED[own]:
            problems.append(f"{rel.as_posix()}:{line}: the {own} layer imports {'.'.join(parts)} "
                            f"({target} layer); {FIX.get(own, '')}")
    return problems


def pack_modules() -> list[Path]:
    skip = {"tests", ".venv", ".git", "js", "workflows"}
    return sorted(p.relative_to(PACK_ROOT) for p in PACK_ROOT.rglob("*.py")
                  if not skip & set(p.relative_to(PACK_ROOT).parts))


def test_every_import_points_down_the_layers():
    modules = pack_modules()
    assert any(layer_of(m) == "vocabulary" for m in modules) and any(layer_of(m) == "pipeline" for m in modules)
    problems = [p for m in modules for p in violations(m, (PACK_ROOT / m).read_text(encoding="utf-8"))]
    assert not problems, "imports that point up the layers:\n" + "\n".join(problems)


def test_every_relative_import_names_a_module_of_the_pack():
    """A lazy import inside a function runs only when that function does: check each one resolves."""
    missing = []
    for module in pack_modules():
        for line, parts in imported_modules(module, (PACK_ROOT / module).read_text(encoding="utf-8")):
            target = PACK_ROOT.joinpath(*parts)
            if not (target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()):
                missing.append(f"{module.as_posix()}:{line}: no module {'.'.join(parts)}")
    assert missing == []


def test_no_module_under_model_loaders_names_nodes():
    """The plainest form of the rule, independent of the resolver above: not even a lazy import."""
    pattern = re.compile(r"^\s*from\s+\.\.+nodes\b|import_module\(\s*['\"]\.\.+nodes", re.M)
    offenders = [f"{m.as_posix()}:{(PACK_ROOT / m).read_text(encoding='utf-8')[:hit.start()].count(chr(10)) + 1}"
                 for m in pack_modules() if m.parts[0] == "model_loaders"
                 for hit in pattern.finditer((PACK_ROOT / m).read_text(encoding="utf-8"))]
    assert offenders == []


@pytest.mark.parametrize("rel, source, expected", [
    ("model_loaders/qwen.py", "def f():\n    from ..nodes.vocab import X\n", "model_loaders/qwen.py:2: the models layer"),
    ("model_loaders/vocabulary/plan.py", "from ..handles import ModelHandle\n",
     "model_loaders/vocabulary/plan.py:1: the vocabulary layer imports model_loaders.handles"),
    ("model_loaders/vocabulary/plan.py", "from ...nodes import base\n", "imports nodes (nodes layer)"),
    ("nodes/pipeline/gate.py", "from ..gate import CriticGateNode\n", "the pipeline layer imports nodes.gate"),
    ("model_loaders/__init__.py", "from importlib import import_module\nimport_module('..nodes.base', __name__)\n",
     "model_loaders/__init__.py:2: the models layer imports nodes.base"),
    ("model_loaders/wan.py", "from .... import x\n", "climbs above the pack root"),
])
def test_the_check_finds_an_upward_import(rel, source, expected):
    found = violations(Path(rel), source)
    assert len(found) == 1 and expected in found[0], found


@pytest.mark.parametrize("rel, source", [
    ("model_loaders/qwen.py", "from .vocabulary.plan import Plan\nfrom .handles import ModelHandle\n"),
    ("model_loaders/vocabulary/plan.py", "from .languages import LANGUAGES\n"),
    ("nodes/pipeline/gate.py", "from ...model_loaders.technical import technical_check\nfrom .stage import Job\n"),
    ("nodes/gate.py", "from .pipeline.gate import run_gate\nfrom ..model_loaders.handles import ModelHandle\n"),
    ("nodes/__init__.py", "from . import gate\n"),
])
def test_the_check_allows_downward_imports(rel, source):
    assert violations(Path(rel), source) == []
