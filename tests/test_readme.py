"""README's commands are the ones CI runs, so they stay true."""

from __future__ import annotations

import re

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
