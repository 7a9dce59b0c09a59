"""README's commands are the ones CI runs, so they stay true."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

from cinereel_testkit import PACK_ROOT


def _first_command(section: str) -> str:
    readme = (PACK_ROOT / "README.md").read_text(encoding="utf-8")
    body = readme.split(f"## {section}", 1)[1]
    return re.search(r"```bash\n(.+?)\n```", body, re.S).group(1).strip()


def test_ci_runs_readme_set_up_and_test_commands_verbatim():
    ci = (PACK_ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert _first_command("Set up (one command)") in ci
    assert _first_command("Run the tests") in ci


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
