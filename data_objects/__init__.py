"""VoxCeleb1 data: audio features, preprocessing, datasets and a synthetic demo corpus."""
from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Callable, Iterable


def available_cores() -> int:
    """Cores this process may run on (the affinity mask where the OS has one)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def write_data_file(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file beside `path`, then rename it over `path`.

    Unlike utils.files.write_atomically, no fsync (a corpus has 150,000 feature files that can be recomputed; a
    killed process never loses what it handed to the OS) and the file gets the umask's permissions, not
    mkstemp's owner-only ones, since a data folder is often shared.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_data_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """A text file of `lines`, one per line, written as write_data_file does."""
    text = "".join(f"{line}\n" for line in lines)
    write_data_file(path, lambda handle: handle.write(text.encode("utf-8")))
