"""The README's Quick start stays true: two commands, and CI runs the second one."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def quickstart_commands() -> list[str]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    section = text.split("## Quick start", 1)[1]
    block = re.search(r"```(?:bash|sh)?\n(.*?)```", section, re.S)
    assert block, "the Quick start section must hold a code block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def test_quickstart_has_exactly_two_commands():
    commands = quickstart_commands()
    assert len(commands) == 2
    assert "concepts demo" in commands[0]
    assert "pytest" in commands[1]
    for command in commands:
        assert command.startswith("python3 -m venv .venv")  # both work on a fresh machine


def test_ci_runs_the_second_quickstart_command():
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    match = re.search(r"QUICKSTART_TEST_COMMAND='(.*)'", ci)
    assert match, ".ci/run must define QUICKSTART_TEST_COMMAND"
    assert match.group(1) == quickstart_commands()[1]
    assert 'bash -c "$QUICKSTART_TEST_COMMAND"' in ci


def test_quickstart_is_on_the_first_screen():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    first_screen = "\n".join(lines[:40])
    assert "## Quick start" in first_screen
