"""A trained model used on audio files: the inputs of the scripts, and their embeddings.

Embeddings are computed as evaluation computes them (each recipe's windows, the mean over windows, the same
chunks shared between processes), from .wav/.flac files read at any rate and resampled to 16 kHz instead of
from preprocessed features. The model comes from functions/speaker_model.py.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from data_objects.audio import SAMPLE_RATE
from data_objects.errors import AudioError, DataError
from data_objects.voxceleb import AUDIO_SUFFIXES
from functions.distributed import DistributedContext
from functions.evaluation import embed_utterances
from functions.speaker_model import SpeakerModel
from utils.run_logging import get_logger

# Files given on the command line with one of these suffixes are lists of audio paths, one per line.
LIST_SUFFIXES = (".txt", ".lst", ".list")


# ----- inputs -----
@dataclass
class AudioInputs:
    """Audio files to embed: `keys[i]` names `paths[i]` in the outputs; `missing` lists what does not exist."""

    keys: list[str]
    paths: list[Path]
    missing: list[str]

    def add(self, key: str, path: Path) -> None:
        if path.is_file():
            self.keys.append(key)
            self.paths.append(path)
        else:
            self.missing.append(key)


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_SUFFIXES


def _list_lines(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path} cannot be read as a list of audio files: {error}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def collect_audio_inputs(inputs: Sequence[str], audio_dir: str | None = None) -> AudioInputs:
    """Audio files from files, folders (searched recursively for .wav and .flac; keys relative to the folder) and
    list files (LIST_SUFFIXES; one path per line, relative to `audio_dir` or else to the current folder)."""
    found = AudioInputs([], [], [])
    root = Path(audio_dir) if audio_dir else None
    for given in inputs:
        path = Path(given)
        if path.is_dir():
            for audio in sorted(p for p in path.rglob("*") if _is_audio(p) and p.is_file()):
                found.add(audio.relative_to(path).as_posix(), audio)
        elif path.suffix.lower() in LIST_SUFFIXES and path.is_file():
            for line in _list_lines(path):
                entry = Path(line)
                found.add(line, entry if root is None or entry.is_absolute() else root / entry)
        else:
            found.add(given, path)
    seen: dict[str, Path] = {}
    keys, paths = [], []
    for key, path in zip(found.keys, found.paths):
        if key in seen:
            if seen[key].resolve() != path.resolve():
                raise DataError(f"two inputs are both named {key} ({seen[key]} and {path}); give the folders one "
                                "at a time, or a list of paths")
            continue
        seen[key] = path
        keys.append(key)
        paths.append(path)
    if not keys:
        listed = f" ({len(found.missing)} named that do not exist, e.g. {found.missing[0]})" if found.missing else ""
        raise DataError(f"no audio files among the inputs{listed}")
    return AudioInputs(keys, paths, found.missing)


def count_skipped(reasons: Sequence[str]) -> str:
    """'3 skipped: 2 missing, 1 unreadable', or '0 skipped'."""
    counts = Counter(reasons)
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items()))
    return f"{len(reasons)} skipped" + (f": {detail}" if detail else "")


# ----- embeddings -----
@dataclass
class AudioEmbeddings:
    """Mean window embedding of every file that could be read (`embedded[i]` says whether file i could)."""

    embeddings: torch.Tensor
    embedded: np.ndarray
    failures: list[AudioError]


def embed_audio(
    model: SpeakerModel, paths: Sequence[Path], ctx: DistributedContext, num_workers: int = 0, log_skips: bool = True
) -> AudioEmbeddings:
    """Embed each file once, as evaluation embeds an utterance; files that cannot be embedded are named in the
    log (unless `log_skips` is False) and left out, clips shorter than the model's minimum that are embedded
    (`--short warn`) are named with a warning."""
    dataset = model.audio_dataset(paths)
    embeddings, _, counts = embed_utterances(model.network, dataset, ctx, num_workers, desc="embedding")
    embedded = (counts > 0).numpy()
    failures = [dataset.failure(int(index)) for index in np.flatnonzero(~embedded)]
    logger = get_logger()
    if log_skips:
        for failure in failures:
            logger.info(f"skipped {failure}")
    if ctx.is_main and not model.rule.skip_short:
        for index in np.flatnonzero(embedded):
            n_samples = dataset.n_samples(int(index))
            if model.rule.is_short(n_samples):
                logger.warning(f"{paths[index]}: embedded although short ({n_samples / SAMPLE_RATE:.2f} s, less than "
                               f"{model.rule.min_samples / SAMPLE_RATE:.2f} s); its embedding is less reliable")
    return AudioEmbeddings(embeddings, embedded, failures)


def require_some(embedded: np.ndarray, what: str, reasons: Callable[[], str]) -> None:
    if not embedded.any():
        raise DataError(f"none of the {embedded.size} {what} could be read as audio ({reasons()})")
