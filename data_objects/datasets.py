"""Datasets over the preprocessed features (SPEC §3).

Feature files are memory-mapped, so a training crop reads only its window from disk. Every random draw uses
torch's generator: a run's crops and time reversals follow from torch's RNG state (and DataLoader workers seed
themselves from it), which is what an exact resume needs.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from data_objects import voxceleb
from data_objects.audio import SAMPLE_RATE, audio_length, check_length, check_not_silent, load_waveform
from data_objects.errors import AudioError, DataError

PARTIAL_N_FRAMES = 300


def load_normalization(data_dir: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """DATA_DIR/mean.npy and std.npy as float32 [257] arrays."""
    data_dir = Path(data_dir)
    arrays = []
    for name in (voxceleb.MEAN_FILE, voxceleb.STD_FILE):
        path = data_dir / name
        if not path.is_file():
            raise DataError(f"{path} not found; run data_preprocess.py {data_dir} first")
        try:
            array = np.load(path).astype(np.float32)
        except (OSError, ValueError) as error:
            raise DataError(f"{path} cannot be read: {error}") from None
        if array.ndim != 1:
            raise DataError(f"{path} should hold one value per frequency bin, found shape {array.shape}")
        arrays.append(array)
    if arrays[0].shape != arrays[1].shape:
        raise DataError(f"{data_dir}: mean.npy and std.npy have different sizes")
    return arrays[0], arrays[1]


def feature_root(data_dir: str | os.PathLike, sub_dir: str) -> Path:
    """DATA_DIR/feature/<sub_dir>, which must hold speaker folders."""
    root = Path(data_dir) / voxceleb.FEATURE_DIR / sub_dir
    if not root.is_dir() or not any(entry.is_dir() for entry in root.iterdir()):
        raise DataError(f"no preprocessed features in {root}; run data_preprocess.py {data_dir} first")
    return root


def speaker_utterances(root: Path, partition: str | None) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted speaker folder names, and (feature path, class index) of every utterance listed in the partition."""
    classes = sorted(entry.name for entry in root.iterdir() if entry.is_dir())
    name = voxceleb.sources_file(partition)
    utterances = []
    for label, speaker in enumerate(classes):
        listing = root / speaker / name
        if not listing.is_file():
            raise DataError(f"{listing} not found; run data_preprocess.py to (re)build {root}")
        for number, line in enumerate(listing.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                npy_name = line.split(",", 1)[0]
                if not npy_name.endswith(".npy"):
                    raise DataError(f"{listing}:{number}: malformed line, expected '<npy file name>,<wav path>'")
                utterances.append((root / speaker / npy_name, label))
    if not utterances:
        raise DataError(f"{root}: no utterance listed in any {name}")
    return classes, utterances


def load_features(path: Path) -> np.ndarray:
    """A feature file, memory-mapped: only the frames that are used are read."""
    try:
        features = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as error:
        raise DataError(f"{path} cannot be read as a feature file: {error}") from None
    if features.ndim != 2 or len(features) == 0:
        raise DataError(f"{path} is not a [frames, bins] feature array (shape {features.shape})")
    return features


def tile_by_doubling(features: np.ndarray, min_frames: int, strictly_longer: bool = False) -> np.ndarray:
    """Repeat every frame twice along time until the utterance has at least `min_frames` frames
    (more than `min_frames` when `strictly_longer`)."""
    repeats = 1
    while len(features) * repeats < min_frames or (strictly_longer and len(features) * repeats == min_frames):
        repeats *= 2
    return np.repeat(features, repeats, axis=0) if repeats > 1 else features


def random_window(features: np.ndarray, n_frames: int) -> np.ndarray:
    """A random window of `n_frames`; an utterance not longer than that is tiled and cropped from frame 0."""
    if len(features) <= n_frames:
        return tile_by_doubling(np.asarray(features), n_frames)[:n_frames]
    start = int(torch.randint(0, len(features) - n_frames + 1, ()).item())
    return features[start : start + n_frames]


def sliding_windows(features: np.ndarray, n_frames: int) -> np.ndarray:
    """Windows of `n_frames` with a hop of n_frames // 2, stacked [N, n_frames, bins]; an utterance not longer
    than a window is first tiled until it is longer."""
    if len(features) <= n_frames:
        features = tile_by_doubling(np.asarray(features), n_frames, strictly_longer=True)
    hop = max(n_frames // 2, 1)
    starts = range(0, len(features) - n_frames + 1, hop)
    return np.stack([features[start : start + n_frames] for start in starts])


class _NormalizedFeatures(Dataset):
    def __init__(self, data_dir: str | os.PathLike, partial_n_frames: int) -> None:
        if partial_n_frames < 1:
            raise DataError(f"partial_n_frames must be positive, got {partial_n_frames}")
        self.data_dir = Path(data_dir)
        self.partial_n_frames = partial_n_frames
        self.mean, self.std = load_normalization(data_dir)

    def normalize(self, frames: np.ndarray) -> np.ndarray:
        if frames.shape[-1] != len(self.mean):
            raise DataError(f"features have {frames.shape[-1]} bins but mean.npy has {len(self.mean)}")
        return ((np.asarray(frames, dtype=np.float32) - self.mean) / self.std).astype(np.float32, copy=False)


class SpectrogramDataset(_NormalizedFeatures):
    """Training items: (float32 tensor [partial_n_frames, 257], class index).

    A random window (tiled by doubling when the utterance is shorter), normalised with DATA_DIR/mean.npy and
    std.npy, masked by `feature_augmentation` when one is given (SpecAugment), then reversed in time with
    probability 0.5. `partition` None takes every utterance of the sub-folder (verification trains on all of
    `dev`); 'train', 'val' or 'test' take that part of `merged`.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        sub_dir: str = voxceleb.MERGED,
        partition: str | None = None,
        partial_n_frames: int = PARTIAL_N_FRAMES,
        feature_augmentation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__(data_dir, partial_n_frames)
        self.root = feature_root(data_dir, sub_dir)
        self.partition = partition
        self.feature_augmentation = feature_augmentation
        self.classes, self.utterances = speaker_utterances(self.root, partition)
        self.num_classes = len(self.classes)

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.utterances[index]
        window = torch.from_numpy(np.ascontiguousarray(
            self.normalize(random_window(load_features(path), self.partial_n_frames))))
        if self.feature_augmentation is not None:
            window = self.feature_augmentation(window)
        if torch.rand(()).item() < 0.5:
            window = window.flip(0)
        return window, label


class UtteranceWindowsDataset(_NormalizedFeatures):
    """Test items: (float32 tensor [N, partial_n_frames, 257] of normalised windows with a half-window hop, label).

    Built from a sub-folder and partition (labels are class indices, as in training), or with `from_paths`
    from explicit feature files (labels are positions in that list).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        sub_dir: str = voxceleb.MERGED,
        partition: str | None = "test",
        partial_n_frames: int = PARTIAL_N_FRAMES,
    ) -> None:
        super().__init__(data_dir, partial_n_frames)
        root = feature_root(data_dir, sub_dir)
        self.classes, utterances = speaker_utterances(root, partition)
        self.num_classes = len(self.classes)
        self.utterances = [path for path, _ in utterances]
        self.labels = [label for _, label in utterances]

    @classmethod
    def from_paths(
        cls, data_dir: str | os.PathLike, paths: Sequence[str | os.PathLike], partial_n_frames: int = PARTIAL_N_FRAMES
    ) -> "UtteranceWindowsDataset":
        dataset = cls.__new__(cls)
        _NormalizedFeatures.__init__(dataset, data_dir, partial_n_frames)
        dataset.classes, dataset.num_classes = [], 0
        dataset.utterances = [Path(p) for p in paths]
        dataset.labels = list(range(len(dataset.utterances)))
        return dataset

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        windows = sliding_windows(load_features(self.utterances[index]), self.partial_n_frames)
        return torch.from_numpy(np.ascontiguousarray(self.normalize(windows))), self.labels[index]


@dataclass(frozen=True)
class ClipRule:
    """Which clips are embedded. Silent ones (all samples zero) never, as preprocessing drops them; those shorter
    than `min_samples` (at 16 kHz) are left out, or with `skip_short` False embedded and reported by the caller.
    Fewer than 257 samples are always left out: the STFT's reflection padding needs more."""

    min_samples: int
    skip_short: bool = True

    def check(self, samples: np.ndarray, name: object) -> None:
        check_not_silent(samples, name)
        check_length(samples, path=name)
        if self.skip_short and len(samples) < self.min_samples:
            raise AudioError("too short", f"{name}: too short ({len(samples) / SAMPLE_RATE:.2f} s, less than the "
                                          f"minimum of {self.min_samples / SAMPLE_RATE:.2f} s)")

    def is_short(self, n_samples: int) -> bool:
        return n_samples < self.min_samples


def check_audio_format(path: Path) -> None:
    """Raise the 'unsupported format' AudioError for a file that is not .wav or .flac (what preprocessing reads):
    libsndfile decodes some other formats too, but an mp3's decoder delay shifts its samples."""
    if path.suffix.lower() not in voxceleb.AUDIO_SUFFIXES:
        raise AudioError("unsupported format", f"{path}: unsupported audio format '{path.suffix or 'no suffix'}' "
                                               f"(supported: {', '.join(voxceleb.AUDIO_SUFFIXES)}; convert it first)")


class AudioWindowsDataset(Dataset):
    """Test items computed from audio: (float32 tensor [N, partial_n_frames, bins] of windows, position).

    A clip is a .wav/.flac file, read at any rate and resampled to 16 kHz, its channels averaged (as
    preprocessing does), or float32 mono samples already at 16 kHz; `windows` turns the samples into the
    normalised features of the recipe's evaluation windows [N, partial_n_frames, bins]. A clip that cannot (not
    audio, empty, silent, too short under `rule`) gives N = 0 windows; `failure` says why.
    """

    def __init__(
        self,
        clips: Sequence[str | os.PathLike | np.ndarray],
        windows: Callable[[np.ndarray], np.ndarray],
        bins: int,
        partial_n_frames: int = PARTIAL_N_FRAMES,
        rule: ClipRule = ClipRule(0),
    ) -> None:
        self.clips = [clip if isinstance(clip, np.ndarray) else Path(clip) for clip in clips]
        self.windows, self.bins, self.partial_n_frames, self.rule = windows, bins, partial_n_frames, rule

    def __len__(self) -> int:
        return len(self.clips)

    def name(self, index: int) -> str:
        clip = self.clips[index]
        return f"clip {index}" if isinstance(clip, np.ndarray) else str(clip)

    def samples(self, index: int) -> np.ndarray:
        clip = self.clips[index]
        if isinstance(clip, np.ndarray):
            return clip
        check_audio_format(clip)
        return load_waveform(clip).samples

    def n_samples(self, index: int) -> int:
        """The clip's length at 16 kHz (from a file's header)."""
        clip = self.clips[index]
        return len(clip) if isinstance(clip, np.ndarray) else audio_length(clip)

    def utterance_windows(self, index: int) -> np.ndarray:
        samples = self.samples(index)
        self.rule.check(samples, self.name(index))
        return self.windows(samples)

    def failure(self, index: int) -> AudioError | None:
        """Why clip `index` gives no windows, or None if it gives some."""
        try:
            self.utterance_windows(index)
        except AudioError as error:
            return error
        return None

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        try:
            windows = self.utterance_windows(index)
        except AudioError:
            windows = np.zeros((0, self.partial_n_frames, self.bins), dtype=np.float32)
        return torch.from_numpy(np.ascontiguousarray(windows, dtype=np.float32)), index


class TrialList:
    """A veri_test.txt-format trial list mapped onto feature/<sub_dir>.

    `paths`: each utterance used by a kept trial, once, in order of first use; `labels`, `first`, `second`:
    per trial, the target label (1 same speaker, 0 not) and the positions of its two utterances in `paths`;
    `first_paths`, `second_paths`: the utterances as written in the list. Trials with a missing feature file are
    left out and counted in `skipped`.
    """

    def __init__(self, data_dir: str | os.PathLike, trials_file: str | os.PathLike = voxceleb.TRIALS_FILE,
                 sub_dir: str = "test") -> None:
        self.data_dir = Path(data_dir)
        path = Path(trials_file)
        self.path = path if path.is_absolute() or path.exists() else self.data_dir / path
        root = self.utterance_root(sub_dir)
        trials = voxceleb.read_trials(self.path)
        if not trials:
            raise DataError(f"{self.path} holds no trials")
        position: dict[str, int] = {}
        exists: dict[str, bool] = {}
        self.paths: list[Path] = []
        labels, first, second = [], [], []
        self.first_paths: list[str] = []
        self.second_paths: list[str] = []
        for trial in trials:
            pair = (trial.first, trial.second)
            for utterance in pair:
                if utterance not in exists:
                    exists[utterance] = self.locate(root, utterance).is_file()
            if not all(exists[u] for u in pair):
                continue
            for utterance in pair:
                if utterance not in position:
                    position[utterance] = len(self.paths)
                    self.paths.append(self.locate(root, utterance))
            labels.append(trial.label)
            first.append(position[trial.first])
            second.append(position[trial.second])
            self.first_paths.append(trial.first)
            self.second_paths.append(trial.second)
        self.skipped = len(trials) - len(labels)
        if not labels:
            raise DataError(f"{self.path}: none of its {len(trials)} trials has both {self.missing_hint(root)}")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.first = np.asarray(first, dtype=np.int64)
        self.second = np.asarray(second, dtype=np.int64)

    def utterance_root(self, sub_dir: str) -> Path:
        return self.data_dir / voxceleb.FEATURE_DIR / sub_dir

    def locate(self, root: Path, utterance: str) -> Path:
        """The file of '<speaker>/<video>/<utterance>.wav' under `root`."""
        speaker, npy_name = voxceleb.feature_name(utterance)
        return root / speaker / npy_name

    def missing_hint(self, root: Path) -> str:
        return f"feature files in {root}; run data_preprocess.py first"

    def __len__(self) -> int:
        return len(self.labels)

    def utterance_dataset(self, partial_n_frames: int = PARTIAL_N_FRAMES) -> UtteranceWindowsDataset:
        """Windows of every utterance of `paths`, in that order (item label = position)."""
        return UtteranceWindowsDataset.from_paths(self.data_dir, self.paths, partial_n_frames)
