"""Progress of long loops: a tqdm bar on a terminal, plain lines where the output goes to a file or a pipe.

A redirected tqdm bar fills a log with carriage-return frames; `progress` prints instead one line per `every`
updates (when given) or per `interval` seconds, each with position, the caller's figures, rate and ETA.
"""
from __future__ import annotations

import sys
import time
from typing import IO

from tqdm import tqdm

PLAIN_INTERVAL_S = 30.0


def is_terminal(stream: IO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class _Display:
    def __enter__(self):
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def close(self) -> None:
        pass


class PlainProgress(_Display):
    """Plain progress lines: `desc: n/total unit (p %), figures, rate, ETA`."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, every: int, interval: float, stream: IO):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.every, self.interval, self.stream = every, interval, stream
        self._start_n, self._started = initial, time.monotonic()
        self._last_line, self._last_n, self._figures = self._started, initial, ""

    def set_postfix(self, **figures: object) -> None:
        self._figures = ", ".join(f"{name} {value}" for name, value in figures.items())

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        due = (self.n // self.every > self._last_n // self.every) if self.every else now - self._last_line >= self.interval
        if due:
            self._last_line, self._last_n = now, self.n
            self.stream.write(self.line(now) + "\n")
            self.stream.flush()

    def line(self, now: float) -> str:
        done, elapsed = self.n - self._start_n, max(now - self._started, 1e-9)
        parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}"]
        if self.total:
            parts[0] += f" ({100 * self.n / self.total:.0f} %)"
        if self._figures:
            parts.append(self._figures)
        if done > 0:
            rate = done / elapsed
            parts.append(f"{rate:.2f} {self.unit}/s" if rate >= 1 else f"{1 / rate:.2f} s/{self.unit}")
            if self.total:
                parts.append(f"ETA {_duration(max(self.total - self.n, 0) / rate)}")
        return ", ".join(parts)


class _Silent(_Display):
    def set_postfix(self, **figures: object) -> None:
        pass

    def update(self, n: int = 1) -> None:
        pass


def progress(
    total: int, desc: str, unit: str, *, initial: int = 0, enabled: bool = True, leave: bool = True,
    every: int = 0, interval: float = PLAIN_INTERVAL_S, mininterval: float = 0.1, stream: IO | None = None,
) -> tqdm | PlainProgress | _Silent:
    """A progress display with `update(n)`, `set_postfix(**figures)` and `close()`.

    On a terminal a tqdm bar (`leave`, `mininterval` as tqdm's); otherwise plain lines on `stream` (stderr by
    default), one each `every` updates when `every` > 0, else at most one each `interval` seconds.
    """
    stream = stream if stream is not None else sys.stderr
    if not enabled:
        return _Silent()
    if is_terminal(stream):
        return tqdm(total=total, desc=desc, unit=unit, initial=initial, leave=leave, mininterval=mininterval,
                    file=stream)
    return PlainProgress(total, desc, unit, initial, every, interval, stream)
