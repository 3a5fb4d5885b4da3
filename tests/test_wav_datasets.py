"""The wav datasets of DATASET.FEATURES fbank: crops read only their samples, windows and classes are those of the
precomputed spectrogram datasets."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from data_objects.datasets import SpectrogramDataset, TrialList, UtteranceWindowsDataset, sliding_windows
from data_objects.errors import DataError
from data_objects.sources import FEATURE_SOURCES, feature_source
from data_objects.wav_datasets import WavCropDataset, WavWindowsDataset, sliding_sample_windows
from models.frontends import FRONTENDS, FbankFrontend, frame_count, samples_for_frames
from utils.config import get_default_config

RATE = 16_000
N_FRAMES = 100
PERIOD = 20_000


def ramp(n_samples: int) -> np.ndarray:
    """Sample i holds (i mod 20000 - 10000) / 32768: its position can be read back from int16 audio."""
    return ((np.arange(n_samples) % PERIOD - 10_000) / 32768.0).astype(np.float32)


def position_of(samples: np.ndarray) -> np.ndarray:
    return np.round(samples * 32768.0).astype(int) + 10_000


def write_wav(path: Path, samples: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, samples, RATE, "PCM_16")
    return path


class RecordingSoundFile(soundfile.SoundFile):
    """soundfile.SoundFile that records how many frames every read returns."""

    reads: list[int] = []

    def read(self, *args, **kwargs):
        data = super().read(*args, **kwargs)
        RecordingSoundFile.reads.append(len(data))
        return data


@pytest.fixture
def reads(monkeypatch) -> list[int]:
    monkeypatch.setattr(soundfile, "SoundFile", RecordingSoundFile)
    RecordingSoundFile.reads = []
    return RecordingSoundFile.reads


def crop_dataset(path: Path) -> WavCropDataset:
    return WavCropDataset(["a"], [(path, 0)], FbankFrontend(), N_FRAMES)


def test_a_training_crop_reads_only_its_samples(tmp_path, reads, monkeypatch):
    path = write_wav(tmp_path / "long.wav", ramp(5 * PERIOD))  # 6.25 s, 100,000 samples
    dataset = crop_dataset(path)
    crops = []
    real_crop = dataset.crop
    monkeypatch.setattr(dataset, "crop", lambda p, speed: crops.append(real_crop(p, speed)) or crops[-1])
    starts = set()
    for seed in range(20):
        reads.clear()
        torch.manual_seed(seed)
        features, label = dataset[0]
        assert features.shape == (N_FRAMES, 80) and label == 0
        assert reads == [samples_for_frames(N_FRAMES)]  # 15,840 of the file's 100,000 samples
        positions = position_of(crops[-1])
        start = positions[0]
        assert np.array_equal(positions, (start + np.arange(len(positions))) % PERIOD)
        starts.add(start)
    assert len(starts) >= 15  # positions are known modulo 20000


def test_a_short_utterance_is_repeated_end_to_end_from_its_start(tmp_path):
    samples = ramp(5000)
    dataset = crop_dataset(write_wav(tmp_path / "short.wav", samples))
    for seed in range(3):
        torch.manual_seed(seed)
        crop = dataset.crop(dataset.utterances[0][0], 1.0)
        assert np.array_equal(position_of(crop), np.arange(samples_for_frames(N_FRAMES)) % 5000)


@pytest.mark.parametrize("n_samples", [3000, 15_840, 16_000, 31_999, 48_000, 80_321])
def test_test_windows_are_the_spectrogram_windows(tmp_path, n_samples):
    samples = ramp(n_samples)
    windows = sliding_sample_windows(samples, N_FRAMES)
    frames = frame_count(n_samples)
    # The frame windows the spectrogram datasets cut from an utterance of the same length.
    expected = sliding_windows(np.arange(frames)[:, None], N_FRAMES)
    assert windows.shape == (len(expected), samples_for_frames(N_FRAMES))
    if frames > N_FRAMES:
        for window, frame_window in zip(windows, expected):
            assert position_of(window)[0] == frame_window[0, 0] * 160 % PERIOD
    dataset = WavWindowsDataset([write_wav(tmp_path / "u.wav", samples)], [7], FbankFrontend(), N_FRAMES)
    features, label = dataset[0]
    assert label == 7 and features.shape == (len(expected), N_FRAMES, 80)
    with torch.no_grad():
        torch.testing.assert_close(features, FbankFrontend()(torch.from_numpy(windows)), atol=1e-4, rtol=0)


def config(corpus: Path, features: str):
    cfg = get_default_config()
    cfg.DATASET.DATA_DIR, cfg.DATASET.FEATURES, cfg.DATASET.PARTIAL_N_FRAMES = str(corpus), features, N_FRAMES
    return cfg


def utterance_names(dataset) -> list[tuple[str, int]]:
    """(speaker/video_NNNNN, label) of every utterance, from wav or feature paths alike."""
    pairs = []
    for entry, label in zip(dataset.utterances, getattr(dataset, "labels", [None] * len(dataset))):
        path, label = entry if isinstance(entry, tuple) else (entry, label)
        path = Path(path)
        name = f"{path.parent.name}_{path.stem}" if path.suffix == ".wav" else path.stem
        speaker = path.parts[-3] if path.suffix == ".wav" else path.parent.name
        pairs.append((f"{speaker}/{name}", label))
    return sorted(pairs)


def test_classes_partitions_and_trials_are_those_of_the_spectrogram_datasets(tiny_corpus):
    assert set(FEATURE_SOURCES) == set(FRONTENDS)
    wav, spectrogram = feature_source(config(tiny_corpus, "fbank")), feature_source(config(tiny_corpus, "spectrogram"))
    assert isinstance(spectrogram.identification_train_set("train"), SpectrogramDataset)
    for partition in ("train", "val"):
        ours, theirs = wav.identification_train_set(partition), spectrogram.identification_train_set(partition)
        assert ours.classes == theirs.classes and ours.num_classes == theirs.num_classes == 10
        assert utterance_names(ours) == utterance_names(theirs)
    ours, theirs = wav.identification_test_set("test"), spectrogram.identification_test_set("test")
    assert isinstance(theirs, UtteranceWindowsDataset) and ours.num_classes == theirs.num_classes
    assert utterance_names(ours) == utterance_names(theirs)
    ours, theirs = wav.verification_train_set(), spectrogram.verification_train_set()
    assert ours.classes == theirs.classes and len(ours.classes) == 7
    assert utterance_names(ours) == utterance_names(theirs)
    ours, theirs = wav.trial_list("veri_test.txt"), spectrogram.trial_list("veri_test.txt")
    assert isinstance(theirs, TrialList) and len(ours) == len(theirs) == 90
    assert (ours.labels.tolist(), ours.first.tolist(), ours.second.tolist()) == (
        theirs.labels.tolist(), theirs.first.tolist(), theirs.second.tolist())
    assert [p.relative_to(tiny_corpus / "test" / "wav").as_posix() for p in ours.paths] == [
        f"{p.parent.name}/{p.stem.rsplit('_', 1)[0]}/{p.stem.rsplit('_', 1)[1]}.wav" for p in theirs.paths]
    windows = ours.utterance_dataset(N_FRAMES)
    features, position = windows[3]
    assert position == 3 and features.shape[1:] == (N_FRAMES, 80)


def test_a_data_folder_without_wavs_is_named(tmp_path):
    (tmp_path / "dev" / "wav").mkdir(parents=True)
    with pytest.raises(DataError, match=rf"^no wav files in {tmp_path}/dev/wav: DATASET.FEATURES fbank reads "):
        feature_source(config(tmp_path, "fbank")).verification_train_set()
    with pytest.raises(DataError, match=rf"^no wav files in {tmp_path}/dev/wav"):
        feature_source(config(tmp_path, "fbank")).identification_train_set("train")


def test_a_span_of_a_file_at_another_rate_is_read_at_16_khz(tmp_path):
    from data_objects import audio

    seconds = np.arange(3 * 8000) / 8000
    path = tmp_path / "tone_8k.wav"
    soundfile.write(path, (0.3 * np.sin(2 * np.pi * 300.0 * seconds)).astype(np.float32), 8000, "PCM_16")
    assert audio.audio_length(path) == 3 * RATE
    span = audio.read_span(path, RATE, 8000)
    assert len(span) == 8000
    spectrum = np.abs(np.fft.rfft(span * np.hanning(len(span))))
    assert abs(np.argmax(spectrum) * RATE / len(span) - 300.0) < 4.0
