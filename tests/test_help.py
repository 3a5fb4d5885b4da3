"""Every entry script, and every command the README and docs name, answers --help with its usage (exit 0, no
traceback); found from the files, so a script added later is covered without a change here."""
from __future__ import annotations

import ast
import json
import re

import pytest

from tests.conftest import REPO, run_script

PROJECT_PACKAGES = ("benchmarks", "data_objects", "functions", "models", "utils")
COMMAND = re.compile(r"\bpython3? +(-m +[A-Za-z_][\w.]*|[\w./-]+\.py)\b")


def has_main_guard(path) -> bool:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)


def entry_scripts() -> list[str]:
    return sorted(path.name for path in REPO.glob("*.py") if has_main_guard(path))


def documented_commands() -> list[str]:
    """`python -m PACKAGE.MODULE` of this project's packages and `python PATH.py`, as README.md,
    benchmarks/README.md and docs/ name them."""
    pages = [REPO / "README.md", REPO / "benchmarks" / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    commands = set()
    for page in pages:
        for command in COMMAND.findall(page.read_text(encoding="utf-8")):
            command = " ".join(command.split())
            if not command.startswith("-m ") or command[3:].split(".")[0] in PROJECT_PACKAGES:
                commands.add(command)
    return sorted(commands)


@pytest.fixture(scope="module")
def help_pages() -> dict[str, dict]:
    targets = sorted(set(entry_scripts()) | set(documented_commands()))
    arguments = [part for target in targets for part in target.split()]
    return json.loads(run_script("-m", "tests.helpers.help_pages", *arguments, timeout=120).stdout)


def test_the_commands_are_found():
    scripts = entry_scripts()
    assert {"nas_study.py", "search.py", "demo.py", "export.py", "data_preprocess.py"} <= set(scripts)
    assert "-m models.genotypes" in documented_commands() and "-m data_objects.synthetic" in documented_commands()


def test_every_command_prints_its_usage(help_pages):
    faults = {
        target: page for target, page in help_pages.items()
        if page["code"] != 0 or not page["stdout"].startswith("usage:")
        or "Traceback" in page["stdout"] + page["stderr"]
    }
    assert not faults, faults


def test_a_command_that_fails_is_reported(tmp_path):
    broken = tmp_path / "broken.py"
    broken.write_text("import argparse\nparser = argparse.ArgumentParser()\nparser.add_mutually_exclusive_group()\n"
                      "parser.parse_args()\n")
    page = json.loads(run_script("-m", "tests.helpers.help_pages", str(broken)).stdout)[str(broken)]
    assert page["code"] == 1 and "Traceback" in page["stderr"]
