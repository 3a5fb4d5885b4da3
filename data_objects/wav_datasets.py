"""Datasets over the wav files of VoxCeleb1's layout (SPEC §1, §3), features computed on the fly by a front-end
(models/frontends.py): no data_preprocess.py run is needed.

Classes and partitions are those of the precomputed datasets: identification takes the iden_split.txt partitions
over the speakers of dev/wav and test/wav together; verification trains on every utterance of dev/wav. A
training item reads only the samples of its crop (a seek and a read; see data_objects/audio.read_span).

Short utterances are tiled as the spectrogram datasets tile them (doubled until long enough, cropped from the
start), but by repeating the waveform end to end: repeating every sample twice, the waveform counterpart of
repeating every frame, would halve the pitch. Test items are the same windows as the precomputed datasets (the
utterance cut into PARTIAL_N_FRAMES-frame windows with a half-window hop, each window through the front-end as
a training crop is): the evaluation then batches windows of several utterances as it does for the published
recipe, and the two recipes' numbers differ by their features only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from data_objects import audio, voxceleb
from data_objects.augmentation import change_speed, randint, tile
from data_objects.datasets import PARTIAL_N_FRAMES, TrialList
from data_objects.errors import DataError
from models.frontends import frame_count, samples_for_frames


def wav_root(data_dir: str | os.PathLike, subset: str) -> Path:
    """DATA_DIR/<subset>/wav, which must hold speaker folders."""
    root = Path(data_dir) / subset / "wav"
    if not root.is_dir() or not any(entry.is_dir() for entry in root.iterdir()):
        raise DataError(f"no wav files in {root}: DATASET.FEATURES fbank reads "
                        f"{subset}/wav/<speaker>/<video>/<utterance>.wav of VoxCeleb1's layout")
    return root


def _speakers(root: Path) -> list[str]:
    return sorted(entry.name for entry in root.iterdir() if entry.is_dir())


def _audio_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.rglob("*") if path.suffix.lower() in voxceleb.AUDIO_SUFFIXES)


def identification_utterances(data_dir: str | os.PathLike, partition: str) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted speakers of dev/wav and test/wav, and (wav path, class index) of every utterance of the partition
    of iden_split.txt that exists."""
    data_dir = Path(data_dir)
    roots = [wav_root(data_dir, subset) for subset in voxceleb.SUBSETS]
    home = {speaker: root for root in roots for speaker in _speakers(root)}
    classes = sorted(home)
    label = {speaker: index for index, speaker in enumerate(classes)}
    utterances = []
    for part, utterance in voxceleb.read_iden_split(data_dir / voxceleb.SPLIT_FILE):
        speaker = utterance.split("/", 1)[0]
        if part == partition and speaker in home and (home[speaker] / utterance).is_file():
            utterances.append((home[speaker] / utterance, label[speaker]))
    if not utterances:
        raise DataError(f"none of the '{partition}' utterances of {data_dir / voxceleb.SPLIT_FILE} is a wav file in "
                        f"{' or '.join(str(root) for root in roots)}")
    return classes, utterances


def verification_utterances(data_dir: str | os.PathLike) -> tuple[list[str], list[tuple[Path, int]]]:
    """Sorted speakers of dev/wav, and (wav path, class index) of every one of their audio files."""
    root = wav_root(data_dir, "dev")
    classes = _speakers(root)
    utterances = [(path, label) for label, speaker in enumerate(classes) for path in _audio_files(root / speaker)]
    if not utterances:
        raise DataError(f"no wav files in {root}")
    return classes, utterances


def _features(frontend: nn.Module, samples: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return frontend(torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32)))


class WavCropDataset(Dataset):
    """Training items: (float32 tensor [partial_n_frames, F], class index).

    Per item: a speed drawn from `speeds` (speed i makes speaker k class i * K + k of K speakers, so
    SPEEDS triples the classes), a random crop of the samples of partial_n_frames frames at that speed,
    `waveform_augmentation` (reverberation, noise), the front-end, `feature_augmentation` (SpecAugment), then
    time reversal with probability 0.5, as the spectrogram datasets.
    """

    def __init__(
        self,
        classes: Sequence[str],
        utterances: Sequence[tuple[Path, int]],
        frontend: nn.Module,
        partial_n_frames: int = PARTIAL_N_FRAMES,
        speeds: Sequence[float] = (1.0,),
        waveform_augmentation: Callable[[np.ndarray], np.ndarray] | None = None,
        feature_augmentation: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        if partial_n_frames < 1:
            raise DataError(f"partial_n_frames must be positive, got {partial_n_frames}")
        self.speakers = list(classes)
        self.speeds = tuple(speeds)
        self.classes = [speaker if speed == 1.0 else f"{speaker}@{speed}" for speed in self.speeds
                        for speaker in self.speakers]
        self.num_classes = len(self.classes)
        self.utterances = list(utterances)
        # As given: a front-end in training mode may draw (Kaldi's dither), from the generator seeded per item.
        self.frontend = frontend
        self.partial_n_frames = partial_n_frames
        self.waveform_augmentation = waveform_augmentation
        self.feature_augmentation = feature_augmentation

    def __len__(self) -> int:
        return len(self.utterances)

    def crop(self, path: Path, speed: float) -> np.ndarray:
        """A random span of samples_for_frames(partial_n_frames) samples of the utterance played at `speed`;
        one not longer than that is tiled and taken from its start."""
        n_samples = samples_for_frames(self.partial_n_frames)
        length = audio.audio_length(path)
        played = int(length / speed)
        if played <= n_samples:
            return tile(change_speed(audio.read_span(path, 0, length), speed), n_samples)
        start = randint(0, played - n_samples)
        # One source sample more than the span needs, so that resampling never comes up short inside the file.
        span = audio.read_span(path, int(start * speed), int(np.ceil(n_samples * speed)) + (speed != 1.0))
        return tile(change_speed(span, speed), n_samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, label = self.utterances[index]
        speed_index = randint(0, len(self.speeds) - 1) if len(self.speeds) > 1 else 0
        samples = self.crop(path, self.speeds[speed_index])
        if self.waveform_augmentation is not None:
            samples = self.waveform_augmentation(samples)
        features = _features(self.frontend, samples[None])[0]
        if self.feature_augmentation is not None:
            features = self.feature_augmentation(features)
        if torch.rand(()).item() < 0.5:
            features = features.flip(0)
        return features.contiguous(), label + speed_index * len(self.speakers)


def sliding_sample_windows(samples: np.ndarray, n_frames: int) -> np.ndarray:
    """The samples of the windows of n_frames frames, hop n_frames // 2, stacked [N, samples_for_frames(n_frames)];
    an utterance not longer than a window is first tiled until it is longer (as data_objects.datasets.sliding_windows
    does with frames)."""
    frames = frame_count(len(samples))
    repeats = 1
    while frames * repeats <= n_frames:
        repeats *= 2
    if repeats > 1:
        samples = tile(samples, samples_for_frames(frames * repeats))
    hop = max(n_frames // 2, 1)
    width = samples_for_frames(n_frames)
    starts = range(0, frame_count(len(samples)) - n_frames + 1, hop)
    return np.stack([samples[start * audio.HOP_LENGTH : start * audio.HOP_LENGTH + width] for start in starts])


class WavWindowsDataset(Dataset):
    """Test items: (float32 tensor [N, partial_n_frames, F], label): the features of the utterance's windows.

    `labels` are class indices (identification) or positions in a trial list's utterances (verification);
    `num_classes` is the size of the classifier the training set gave (speed perturbation's included).
    """

    def __init__(self, paths: Sequence[Path], labels: Sequence[int], frontend: nn.Module,
                 partial_n_frames: int = PARTIAL_N_FRAMES, classes: Sequence[str] = (), num_classes: int = 0) -> None:
        self.utterances = [Path(path) for path in paths]
        self.labels = list(labels)
        self.frontend = frontend.eval()
        self.partial_n_frames = partial_n_frames
        self.classes = list(classes)
        self.num_classes = num_classes

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        samples = audio.load_waveform(self.utterances[index]).samples
        windows = sliding_sample_windows(samples, self.partial_n_frames)
        return _features(self.frontend, windows), self.labels[index]


def identification_windows(data_dir: str | os.PathLike, partition: str, frontend: nn.Module,
                           partial_n_frames: int, speed_count: int = 1) -> WavWindowsDataset:
    classes, utterances = identification_utterances(data_dir, partition)
    return WavWindowsDataset([path for path, _ in utterances], [label for _, label in utterances], frontend,
                             partial_n_frames, classes, len(classes) * speed_count)


class WavTrialList(TrialList):
    """A veri_test.txt-format trial list mapped onto DATA_DIR/test/wav; trials with a missing wav are skipped."""

    def __init__(self, data_dir: str | os.PathLike, trials_file: str | os.PathLike, frontend: nn.Module) -> None:
        wav_root(data_dir, "test")
        self.frontend = frontend
        super().__init__(data_dir, trials_file, "test")

    def utterance_root(self, sub_dir: str) -> Path:
        return self.data_dir / sub_dir / "wav"

    def locate(self, root: Path, utterance: str) -> Path:
        return root / utterance

    def missing_hint(self, root: Path) -> str:
        return f"wav files in {root}"

    def utterance_dataset(self, partial_n_frames: int = PARTIAL_N_FRAMES) -> WavWindowsDataset:
        return WavWindowsDataset(self.paths, range(len(self.paths)), self.frontend, partial_n_frames)

