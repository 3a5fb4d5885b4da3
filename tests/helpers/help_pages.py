"""Run the `--help` of several scripts and modules in this one process, as their command lines do, and print
one JSON object: for each, its exit status and its output. One process imports torch once for all of them.

    python -m tests.helpers.help_pages SCRIPT.py -m PACKAGE.MODULE ...
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import runpy
import sys
import traceback


def run_help(target: str) -> dict:
    stdout, stderr = io.StringIO(), io.StringIO()
    code: int | str | None = 0
    saved_argv, saved_path = sys.argv, list(sys.path)
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            if target.startswith("-m "):
                sys.argv = [target[3:], "--help"]
                runpy.run_module(target[3:], run_name="__main__", alter_sys=True)
            else:
                # As `python SCRIPT.py` does: the script's own folder first on the path.
                sys.argv = [target, "--help"]
                sys.path.insert(0, os.path.dirname(os.path.abspath(target)))
                runpy.run_path(target, run_name="__main__")
        except SystemExit as stop:
            code = stop.code
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            sys.argv, sys.path[:] = saved_argv, saved_path
    return {"code": code or 0, "stdout": stdout.getvalue(), "stderr": stderr.getvalue()}


def main(arguments: list[str]) -> None:
    targets, position = [], 0
    while position < len(arguments):
        if arguments[position] == "-m":
            targets.append(f"-m {arguments[position + 1]}")
            position += 2
        else:
            targets.append(arguments[position])
            position += 1
    print(json.dumps({target: run_help(target) for target in targets}))


if __name__ == "__main__":
    main(sys.argv[1:])
