"""Weights load as data, never as code: every module of the pack is parsed (never imported) and checked.

Flagged: ``torch.load`` without ``weights_only=True``; ``trust_remote_code`` set to anything but ``False``
(as a keyword or in a dict of keyword arguments); importing ``pickle`` or a pickle-based loader;
``np.load(allow_pickle=...)`` other than ``False``; calls of the built-in ``eval``/``exec``; ``shell=``
anything but ``False``; ``os.system``/``os.popen``. Each rule has a case below proving it fires.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from cinereel_testkit import PACK_ROOT

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "dill", "cloudpickle", "joblib", "shelve"}
TORCH_LOADS = {"torch.load", "torch.serialization.load"}
SHELL_CALLS = {"os.system", "os.popen"}
SKIPPED = {"tests", ".venv", ".git", "node_modules", "build", "dist"}


def pack_modules() -> list[Path]:
    return sorted(p for p in PACK_ROOT.rglob("*.py")
                  if not SKIPPED & set(p.relative_to(PACK_ROOT).parts) and not p.name.startswith("."))


def _is_const(node: ast.AST | None, value: object) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class Checker(ast.NodeVisitor):
    """Collects ``line: problem`` for every unsafe loading or code-running pattern in one module."""

    def __init__(self) -> None:
        self.aliases: dict[str, str] = {}  # local name -> dotted module path it stands for
        self.problems: list[str] = []

    def flag(self, node: ast.AST, problem: str) -> None:
        self.problems.append(f"{node.lineno}: {problem}")

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in PICKLE_MODULES:
                self.flag(node, f"imports {alias.name} (pickle runs code while it loads)")
            self.aliases[alias.asname or alias.name.split(".")[0]] = alias.name if alias.asname else \
                alias.name.split(".")[0]
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        module = node.module or ""
        if module.split(".")[0] in PICKLE_MODULES:
            self.flag(node, f"imports from {module} (pickle runs code while it loads)")
        for alias in node.names:
            if alias.name in PICKLE_MODULES:
                self.flag(node, f"imports {alias.name} (pickle runs code while it loads)")
            if node.level == 0:
                self.aliases[alias.asname or alias.name] = f"{module}.{alias.name}"
        self.generic_visit(node)

    def dotted(self, node: ast.AST) -> str | None:
        if isinstance(node, ast.Name):
            return self.aliases.get(node.id, node.id)
        if isinstance(node, ast.Attribute):
            base = self.dotted(node.value)
            return f"{base}.{node.attr}" if base else None
        return None

    def visit_Call(self, node: ast.Call) -> None:
        name = self.dotted(node.func)
        keywords = {k.arg: k.value for k in node.keywords}
        opaque = any(k.arg is None for k in node.keywords)  # **kwargs: cannot prove what it holds
        if name in TORCH_LOADS and (not _is_const(keywords.get("weights_only"), True)):
            self.flag(node, f"{name} without weights_only=True" + (" (in **kwargs is not enough)" if opaque else ""))
        if name in ("numpy.load", "np.load") and "allow_pickle" in keywords \
                and not _is_const(keywords["allow_pickle"], False):
            self.flag(node, f"{name} with allow_pickle")
        if isinstance(node.func, ast.Name) and node.func.id in ("eval", "exec") and node.func.id not in self.aliases:
            self.flag(node, f"calls the built-in {node.func.id}()")
        if name in ("builtins.eval", "builtins.exec"):
            self.flag(node, f"calls {name}()")
        if name in SHELL_CALLS:
            self.flag(node, f"{name}() runs a shell")
        if "shell" in keywords and not _is_const(keywords["shell"], False):
            self.flag(node, "shell= other than False")
        if "trust_remote_code" in keywords and not _is_const(keywords["trust_remote_code"], False):
            self.flag(node, "trust_remote_code other than False")
        self.generic_visit(node)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values):
            if _is_const(key, None):
                continue
            if isinstance(key, ast.Constant) and key.value == "trust_remote_code" and not _is_const(value, False):
                self.flag(node, "trust_remote_code other than False (in a dict of arguments)")
        self.generic_visit(node)


def problems_in(source: str) -> list[str]:
    checker = Checker()
    checker.visit(ast.parse(source))
    return checker.problems


@pytest.mark.parametrize("path", pack_modules(), ids=lambda p: p.relative_to(PACK_ROOT).as_posix())
def test_the_pack_loads_weights_as_data_and_runs_no_code_it_did_not_ship(path):
    assert problems_in(path.read_text(encoding="utf-8")) == [], path.relative_to(PACK_ROOT)


def test_every_module_of_the_pack_is_checked():
    checked = {p.relative_to(PACK_ROOT).as_posix() for p in pack_modules()}
    assert {"model_loaders/kokoro_tts.py", "model_loaders/qwen.py", "model_loaders/worker.py",
            "nodes/pipeline/cli.py", "__init__.py"} <= checked
    assert not any(p.startswith(("tests/", ".venv/")) for p in checked)


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(path)",
    "import torch\ntorch.load(path, weights_only=False)",
    "import torch\ntorch.load(path, weights_only=flag)",
    "import torch\ntorch.load(path, **options)",
    "import torch as t\nt.load(path, map_location='cpu')",
    "from torch import load\nload(path)",
    "from torch import load as read\nread(path)",
    "import torch\ntorch.serialization.load(path)",
    "AutoModel.from_pretrained(folder, trust_remote_code=True)",
    "AutoProcessor.from_pretrained(folder, trust_remote_code=allow)",
    "kwargs = {'dtype': dtype, 'trust_remote_code': True}",
    "import pickle",
    "import pickle as p",
    "from pickle import loads",
    "import _pickle",
    "import dill",
    "from joblib import load",
    "import numpy as np\nnp.load(path, allow_pickle=True)",
    "eval(text)",
    "exec(code, {})",
    "import builtins\nbuiltins.eval(text)",
    "import subprocess\nsubprocess.run(command, shell=True)",
    "import subprocess\nsubprocess.Popen(command, shell=use_shell)",
    "import os\nos.system('ffmpeg -i in.mp4 out.mp4')",
    "import os\nos.popen('ls')",
])
def test_the_checker_flags_each_unsafe_pattern(source):
    assert len(problems_in(source)) == 1, source


@pytest.mark.parametrize("source", [
    "import torch\ntorch.load(path, map_location='cpu', weights_only=True)",
    "AutoModel.from_pretrained(folder, use_safetensors=True, trust_remote_code=False)",
    "kwargs = {'use_safetensors': True, 'trust_remote_code': False, **extra}",
    "model = model.to(device).eval()",
    "pipe.eval()",
    "import numpy as np\nnp.load(path)\nnp.load(path, allow_pickle=False)",
    "import subprocess\nsubprocess.run([ffmpeg, '-i', src, dst], check=True)",
    "import subprocess\nsubprocess.run(command, shell=False)",
    "import json\njson.loads(text)",
    "from safetensors.torch import load_file\nload_file(path)",
])
def test_the_checker_passes_safe_code(source):
    assert problems_in(source) == [], source


def test_the_kokoro_library_reads_its_pth_weights_with_weights_only():
    """kokoro-v1_0.pth is loaded by kokoro's own KModel (voices/*.pt by model_loaders/kokoro_tts.py): the
    installed kokoro must call torch.load(..., weights_only=True) too, or an upgrade silently loosens it."""
    import importlib.util

    spec = importlib.util.find_spec("kokoro")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("kokoro is not installed (pip install -e '.[test]')")
    folder = Path(next(iter(spec.submodule_search_locations)))
    source = (folder / "model.py").read_text(encoding="utf-8")
    assert "torch.load(" in source and problems_in(source) == []
    assert problems_in((folder / "pipeline.py").read_text(encoding="utf-8")) == []
