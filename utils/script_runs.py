"""Entry scripts run as child processes with their output appended to a log, and the run folders they leave.

The study, the demo and the benchmarks each run the scripts a user would type; each keeps its own policy
(resuming, stopping the other lanes, thread counts), and this module the part they share.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, TextIO


@dataclass(frozen=True)
class ScriptRun:
    returncode: int
    wall_seconds: float
    # The child's own user + system time: on a machine shared with other work it says more than the wall time.
    cpu_seconds: float


def run_logged(command: list[str], log: TextIO, threads: int = 0, cwd: Path | None = None,
               preexec_fn: Callable[[], None] | None = None,
               started: Callable[[subprocess.Popen], None] | None = None) -> ScriptRun:
    """Run `command` with its output appended to `log` after a `$ command` line; `threads` > 0 sets its torch
    threads (OMP_NUM_THREADS), `started` sees the process once it runs. If this process is interrupted while
    waiting, the child gets SIGTERM (the scripts save their state on it) and is waited for."""
    log.write(f"$ {' '.join(command)}\n")
    log.flush()
    environment = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads > 0 else {})}
    begin = time.perf_counter()
    process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, env=environment,
                               preexec_fn=preexec_fn)
    if started is not None:
        started(process)
    try:
        # wait4, not wait: the CPU time of this child alone, while other children of this process also run.
        _, status, usage = os.wait4(process.pid, 0)
    except BaseException:
        process.send_signal(signal.SIGTERM)
        process.wait()
        raise
    process.returncode = os.waitstatus_to_exitcode(status)
    return ScriptRun(process.returncode, time.perf_counter() - begin, usage.ru_utime + usage.ru_stime)


def newest_run(folder: Path) -> Path | None:
    """The run folder a script wrote last under `folder` (its `<config>_<timestamp>` folders), or None."""
    runs = [path for path in folder.glob("*/") if path.is_dir()] if folder.is_dir() else []
    return max(runs, key=lambda path: (path.stat().st_mtime, path.name), default=None)
