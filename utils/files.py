"""Writing files so that a crash or a full disk never leaves one half-written."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Callable, IO

_TEMPORARY_SUFFIX = ".tmp"
# The mode open() asks for; the umask takes its bits away.
_PLAIN_FILE_MODE = 0o666


class OutputError(OSError):
    """An output that could not be written; what was there before is untouched."""


def write_atomically(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call `write` on a temporary file beside `path`, flush it to disk, then rename it over `path`."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=_TEMPORARY_SUFFIX, dir=path.parent)
    try:
        # mkstemp creates the file 0600; others (a serving account, a colleague) read it as they would a file
        # written by open().
        os.fchmod(fd, _PLAIN_FILE_MODE & ~_current_umask())
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, path)
        _fsync_directory(path.parent)
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise OutputError(f"could not write {path}: {error.strerror or error}") from None
        raise


def _current_umask() -> int:
    """The process's umask (reading it means setting it: put straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_text_atomically(path: str | os.PathLike, text: str) -> None:
    write_atomically(path, lambda handle: handle.write(text.encode("utf-8")))


def write_section(output: Path, section: str, start: str, end: str) -> None:
    """Put `section` (which begins with the marker `start` and ends with `end`) in place of the part of `output`
    between those markers, or after its text: each program that writes a table into a page rewrites its own
    part, and the other parts stay."""
    text = output.read_text(encoding="utf-8") if output.exists() else ""
    if start in text and end in text:
        before, rest = text.split(start, 1)
        text = before + section + rest.split(end, 1)[1].lstrip("\n")
    else:
        text = text.rstrip("\n") + ("\n\n" if text else "") + section
    output.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(output, text)


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `write_atomically` leaves in `folder` when its process is killed mid-write."""
    stale = [path for path in Path(folder).glob(f".*{_TEMPORARY_SUFFIX}") if path.is_file()]
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create `path` if needed and prove a file can be written in it, before any work is done."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        write_text_atomically(path / ".write_test", "ok")
        (path / ".write_test").unlink()
    except OSError as error:
        raise OutputError(f"output folder {path} is not writable: {error.strerror or error}") from None
    return path


def _fsync_directory(directory: Path) -> None:
    """Make a rename durable; not every platform can open a directory for this."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
