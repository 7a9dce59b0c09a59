"""README's commands are the ones CI runs, so they stay true."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

from cinereel_testkit import PACK_ROOT, load_test_module


def _first_command(section: str) -> str:
    readme = (PACK_ROOT / "README.md").read_text(encoding="utf-8")
    body = readme.split(f"## {section}", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", body, re.S).group(1).strip()


def test_ci_runs_readme_set_up_and_test_commands_verbatim():
    ci = (PACK_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _first_command("Set up (one command)") in ci
    assert _first_command("Run the tests") in ci


def test_ci_runs_every_command_of_the_test_section():
    """The test section's commands (the test run, ComfyUI 0.3.64's requirements) are CI's, verbatim."""
    ci = (PACK_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    body = (PACK_ROOT / "README.md").read_text(encoding="utf-8").split("## Run the tests", 1)[1].split("\n## ", 1)[0]
    commands = [block.strip() for block in re.findall(r"```bash\n(.+?)\n```", body, re.S)]
    assert len(commands) >= 2 and all(command in ci for command in commands), commands


def test_comfyui_requirements_keep_the_set_up_torch():
    """ComfyUI's requirements.txt names torch unpinned; the constraints file holds the set-up command's build."""
    set_up = _first_command("Set up (one command)")
    pins = [line for line in (PACK_ROOT / "tests" / "comfyui-constraints.txt").read_text(encoding="utf-8").splitlines()
            if line and not line.startswith("#")]
    assert pins and all(f" {pin} " in f" {set_up} " for pin in pins), (pins, set_up)
    assert {pin.split("==")[0] for pin in pins} == {"torch", "torchvision"}


def test_readme_run_command_uses_the_installed_entry_point():
    command = _first_command("Make a reel")
    assert command.startswith(".venv/bin/cinereel ") and "Tokyo" in command


def test_the_suite_runs_from_a_checkout_whose_folder_name_is_not_an_identifier(tmp_path):
    # CI and users clone into any folder; pytest must not try to import the root __init__.py by that name.
    checkout = tmp_path / "ComfyUI-CineReel"
    shutil.copytree(PACK_ROOT, checkout, ignore=shutil.ignore_patterns(".venv", ".git", "__pycache__", "*.egg-info"))
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "tests/test_plan.py"], cwd=checkout,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert re.search(r"\b\d+ passed\b", run.stdout) and "error" not in run.stdout.lower()


def test_the_pack_is_imported_once_under_its_test_alias():
    init = str(PACK_ROOT / "__init__.py")
    copies = sorted(name for name, module in list(sys.modules.items()) if getattr(module, "__file__", None) == init)
    assert copies == ["cinereel"]


def test_the_map_of_the_layers_matches_the_folders():
    """README's layer map lists every package folder of the pack, bottom to top, and nothing else."""
    layers = load_test_module("test_layers")

    readme = (PACK_ROOT / "README.md").read_text(encoding="utf-8")
    body = readme.split("## How it fits together", 1)[1]
    block = re.search(r"```\n(.+?)\n```", body, re.S).group(1)
    listed = [line.split()[0] for line in block.splitlines() if line.strip()]
    folders = {p.parent.relative_to(PACK_ROOT).as_posix() + "/" for p in PACK_ROOT.glob("*/**/__init__.py")
               if not {"tests", ".venv", ".git"} & set(p.relative_to(PACK_ROOT).parts)}
    assert sorted(listed) == sorted(folders), f"README lists {listed}; the pack's package folders are {folders}"
    order = [layers.LAYERS.index(layers.layer_of(Path(folder, "x.py"))) for folder in listed]
    assert order == sorted(order) and len(set(order)) == len(order), f"not bottom to top: {listed}"
