"""VoxCeleb1's file layout and list formats (SPEC §1, §2): names, parsers and the wav -> feature mapping."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from data_objects.errors import DataError

SUBSETS = ("dev", "test")
META_FILE = "vox1_meta.csv"
SPLIT_FILE = "iden_split.txt"
TRIALS_FILE = "veri_test.txt"
META_HEADER = ("VoxCeleb1 ID", "VGGFace1 ID", "Gender", "Nationality", "Set")
FEATURE_DIR = "feature"
MERGED = "merged"
MEAN_FILE = "mean.npy"
STD_FILE = "std.npy"
SOURCES_FILE = "_sources.txt"
PARTITIONS = {1: "train", 2: "val", 3: "test"}
AUDIO_SUFFIXES = (".wav", ".flac")

# <speaker>/<video>/<utterance>.wav, as written in iden_split.txt and veri_test.txt
_UTTERANCE = r"[^/\s]+/[^/\s]+/[^/\s]+\.(?:wav|flac)"
_SPLIT_LINE = re.compile(rf"([123])\s+({_UTTERANCE})")
_TRIAL_LINE = re.compile(rf"([01])\s+({_UTTERANCE})\s+({_UTTERANCE})")


def sources_file(partition: str | None) -> str:
    """`_sources.txt` for every utterance of a speaker folder, `_sources_<partition>.txt` for one partition."""
    return SOURCES_FILE if partition is None else f"_sources_{partition}.txt"


def feature_name(utterance: str) -> tuple[str, str]:
    """'<speaker>/<video>/<NNNNN>.wav' -> ('<speaker>', '<video>_<NNNNN>.npy')."""
    speaker, video, file_name = utterance.split("/")
    return speaker, f"{video}_{Path(file_name).stem}.npy"


@dataclass(frozen=True)
class Trial:
    label: int
    first: str
    second: str


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"{path} not found") from None
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read: {error}") from None
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if line:
            yield number, line


def _malformed(path: Path, number: int, expected: str, line: str, note: str = "") -> DataError:
    """'FILE:LINE: malformed line, expected '<shape>' <note>, got '<line>'."""
    shown = line if len(line) <= 80 else line[:77] + "..."
    return DataError(f"{path}:{number}: malformed line, expected '{expected}'{note}, got '{shown}'")


def _matching_lines(path: Path, pattern: re.Pattern, expected: str) -> Iterator[re.Match]:
    """The match of every non-empty line of `path`; a line that does not match is named by file and number."""
    for number, line in _lines(path):
        match = pattern.fullmatch(line)
        if match is None:
            raise _malformed(path, number, expected, line)
        yield match


def read_iden_split(path: str | Path) -> list[tuple[str, str]]:
    """(partition name, '<speaker>/<video>/<NNNNN>.wav') for every line of an iden_split.txt."""
    expected = "<1|2|3> <speaker>/<video>/<utterance>.wav"
    return [(PARTITIONS[int(match.group(1))], match.group(2))
            for match in _matching_lines(Path(path), _SPLIT_LINE, expected)]


def read_trials(path: str | Path) -> list[Trial]:
    """Every trial of a veri_test.txt-format list."""
    expected = "<1|0> <speaker>/<video>/<utterance>.wav <speaker>/<video>/<utterance>.wav"
    return [Trial(int(match.group(1)), match.group(2), match.group(3))
            for match in _matching_lines(Path(path), _TRIAL_LINE, expected)]


@dataclass(frozen=True)
class AudioTrial:
    """A trial over any two audio paths; `label` is None in a list without labels."""

    label: int | None
    first: str
    second: str


def read_audio_trials(path: str | Path) -> list[AudioTrial]:
    """Every trial of a list in VoxCeleb's format over any audio paths: '<1|0> <path> <path>' lines, or
    '<path> <path>' lines without labels (one or the other throughout)."""
    path = Path(path)
    trials: list[AudioTrial] = []
    expected = "<1|0> <audio path> <audio path>"
    for number, line in _lines(path):
        fields = line.split()
        labelled = len(fields) == 3 and fields[0] in ("0", "1")
        if not (labelled or len(fields) == 2):
            raise _malformed(path, number, expected + "' or '<audio path> <audio path>", line)
        if trials and labelled != (trials[0].label is not None):
            shape = expected if trials[0].label is not None else "<audio path> <audio path>"
            raise _malformed(path, number, shape, line, note=" as the first trial")
        label = int(fields[0]) if labelled else None
        trials.append(AudioTrial(label, fields[-2], fields[-1]))
    if not trials:
        raise DataError(f"{path} holds no trials")
    return trials


def check_meta(path: str | Path) -> None:
    """vox1_meta.csv must be tab-separated with the VoxCeleb1 header."""
    path = Path(path)
    for number, line in _lines(path):
        header = tuple(field.strip() for field in line.split("\t"))
        if header[: len(META_HEADER)] != META_HEADER:
            raise _malformed(path, number, "\t".join(META_HEADER), line)
        return
    raise DataError(f"{path} is empty")


def missing_layout(data_dir: str | Path) -> list[str]:
    """The parts of SPEC §1's layout that `data_dir` lacks, as paths relative to it."""
    data_dir = Path(data_dir)
    wanted_dirs = [f"{subset}/wav" for subset in SUBSETS]
    wanted_files = [META_FILE, SPLIT_FILE, TRIALS_FILE]
    missing = [name for name in wanted_dirs if not (data_dir / name).is_dir()]
    missing += [name for name in wanted_files if not (data_dir / name).is_file()]
    return missing
