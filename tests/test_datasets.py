"""Datasets (SPEC §3) on hand-made feature folders whose frame values give away their position in time."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from data_objects import voxceleb
from data_objects.datasets import PARTIAL_N_FRAMES, SpectrogramDataset, TrialList, UtteranceWindowsDataset
from data_objects.errors import DataError

BINS = 257
MEAN = np.linspace(-1.0, 1.0, BINS, dtype=np.float32)
STD = np.full(BINS, 2.0, dtype=np.float32)


def timeline(n_frames: int) -> np.ndarray:
    """Frame t holds t + 1 in every bin, plus a small per-bin offset."""
    return (np.arange(1, n_frames + 1, dtype=np.float32)[:, None] + np.arange(BINS, dtype=np.float32) / 1000.0)


def normalized(frames: np.ndarray) -> np.ndarray:
    return (frames - MEAN) / STD


def frame_numbers(window: torch.Tensor) -> np.ndarray:
    """The frame numbers (t + 1) behind a normalised window."""
    return np.round(window.numpy()[:, 0] * STD[0] + MEAN[0]).astype(int)


def write_corpus(data: Path, utterances: dict[str, dict[str, int]], sub_dir: str = voxceleb.MERGED,
                 dtype: str = "float32") -> Path:
    """mean.npy, std.npy and feature/<sub_dir>/<speaker>/<name>.npy of the given frame counts, every utterance in
    _sources.txt and _sources_train.txt."""
    data.mkdir(parents=True, exist_ok=True)
    np.save(data / voxceleb.MEAN_FILE, MEAN)
    np.save(data / voxceleb.STD_FILE, STD)
    for speaker, lengths in utterances.items():
        folder = data / voxceleb.FEATURE_DIR / sub_dir / speaker
        folder.mkdir(parents=True)
        for name, n_frames in lengths.items():
            np.save(folder / name, timeline(n_frames).astype(dtype))
        lines = "".join(f"{name},{speaker}/{name}.wav\n" for name in lengths)
        for listing in (voxceleb.SOURCES_FILE, voxceleb.sources_file("train")):
            (folder / listing).write_text(lines)
    return data


@pytest.fixture
def corpus(tmp_path) -> Path:
    return write_corpus(tmp_path / "data", {
        "id10002": {"v_00001.npy": 1000, "v_00002.npy": 70},
        "id10001": {"w_00001.npy": 150, "w_00002.npy": 300, "w_00003.npy": 301},
    })


def item(dataset, name: str):
    paths = [entry[0] if isinstance(entry, tuple) else entry for entry in dataset.utterances]
    return dataset[[path.name for path in paths].index(name)]


def test_classes_are_sorted_speaker_folders(corpus):
    dataset = SpectrogramDataset(corpus, partition="train")
    assert dataset.classes == ["id10001", "id10002"] and dataset.num_classes == 2 and len(dataset) == 5
    assert {path.name: label for path, label in dataset.utterances} == {
        "w_00001.npy": 0, "w_00002.npy": 0, "w_00003.npy": 0, "v_00001.npy": 1, "v_00002.npy": 1}


def test_training_crop_is_a_normalised_window_reversed_half_of_the_time(corpus):
    dataset = SpectrogramDataset(corpus, partition="train")
    torch.manual_seed(7)
    reversed_count, starts = 0, set()
    for _ in range(400):
        window, label = item(dataset, "v_00001.npy")
        assert window.dtype == torch.float32 and window.shape == (PARTIAL_N_FRAMES, BINS) and label == 1
        frames = frame_numbers(window)
        forward = frames if frames[0] < frames[-1] else frames[::-1]
        reversed_count += frames[0] > frames[-1]
        assert np.array_equal(forward, np.arange(forward[0], forward[0] + PARTIAL_N_FRAMES))
        assert 1 <= forward[0] <= 1000 - PARTIAL_N_FRAMES + 1
        np.testing.assert_allclose(window.numpy(), normalized(timeline(1000)[frames - 1]), atol=1e-5)
        starts.add(forward[0])
    # p = 0.5 over 400 draws: the count is within 4 standard deviations of 200.
    assert 160 <= reversed_count <= 240
    assert len(starts) > 100
    torch.manual_seed(7)
    again = [item(dataset, "v_00001.npy")[0] for _ in range(5)]
    torch.manual_seed(7)
    assert all(torch.equal(a, item(dataset, "v_00001.npy")[0]) for a in again)


@pytest.mark.parametrize("name, repeats", [("v_00002.npy", 8), ("w_00001.npy", 2), ("w_00002.npy", 1)])
def test_a_short_utterance_is_tiled_by_doubling_and_cropped_from_frame_0(corpus, name, repeats):
    dataset = SpectrogramDataset(corpus, partition="train")
    n_frames = {"v_00002.npy": 70, "w_00001.npy": 150, "w_00002.npy": 300}[name]
    expected = np.repeat(np.arange(1, n_frames + 1), repeats)[:PARTIAL_N_FRAMES]
    torch.manual_seed(0)
    for _ in range(6):
        frames = frame_numbers(item(dataset, name)[0])
        assert np.array_equal(frames, expected) or np.array_equal(frames[::-1], expected)


def test_a_crop_reads_only_its_window_from_a_memory_map(corpus, monkeypatch):
    dataset = SpectrogramDataset(corpus, partition="train")
    seen = []
    normalize = dataset.normalize

    def spy(frames):
        seen.append(frames)
        return normalize(frames)

    monkeypatch.setattr(dataset, "normalize", spy)
    item(dataset, "v_00001.npy")
    (window,) = seen
    # A slice of np.load(..., mmap_mode="r"): pages outside the window are never read from disk.
    assert isinstance(window, np.memmap) and not window.flags.owndata
    assert Path(window.filename).name == "v_00001.npy" and window.shape == (PARTIAL_N_FRAMES, BINS)


def test_float16_features_come_out_as_float32(tmp_path):
    data = write_corpus(tmp_path, {"id10001": {"a_00001.npy": 400}, "id10002": {"b_00001.npy": 500}},
                        dtype="float16")
    window, _ = SpectrogramDataset(data, partition="train")[0]
    assert window.dtype == torch.float32


@pytest.mark.parametrize("name, n_windows, repeats", [
    ("v_00001.npy", 5, 1),  # 1000 frames: windows start at 0, 150, ..., 600
    ("w_00003.npy", 1, 1),  # 301 frames: longer than a window, not tiled
    ("w_00002.npy", 3, 2),  # 300 frames: not longer than a window, so doubled to 600
    ("w_00001.npy", 3, 4),  # 150 frames: doubled twice to 600
    ("v_00002.npy", 2, 8),  # 70 frames: doubled three times to 560, windows at 0 and 150
])
def test_test_windows_hop_half_a_window(corpus, name, n_windows, repeats):
    dataset = UtteranceWindowsDataset(corpus, partition="train")
    windows, label = item(dataset, name)
    assert windows.shape == (n_windows, PARTIAL_N_FRAMES, BINS) and label == (1 if name[0] == "v" else 0)
    n_frames = int(np.load(corpus / voxceleb.FEATURE_DIR / voxceleb.MERGED / ("id10002" if name[0] == "v" else "id10001")
                           / name, mmap_mode="r").shape[0])
    tiled = timeline(n_frames)[np.repeat(np.arange(n_frames), repeats)]
    for k in range(n_windows):
        start = k * PARTIAL_N_FRAMES // 2
        np.testing.assert_allclose(windows[k].numpy(), normalized(tiled[start : start + PARTIAL_N_FRAMES]), atol=1e-5)


def write_trials(data: Path, lines: list[str]) -> Path:
    path = data / voxceleb.TRIALS_FILE
    path.write_text("".join(f"{line}\n" for line in lines))
    return path


def test_trial_list_skips_and_counts_trials_without_features(tmp_path):
    data = write_corpus(tmp_path, {"id10270": {"a_00001.npy": 400, "a_00002.npy": 400},
                                   "id10271": {"b_00001.npy": 400}}, sub_dir="test")
    write_trials(data, [
        "1 id10270/a/00001.wav id10270/a/00002.wav",
        "0 id10270/a/00001.wav id10271/b/00001.wav",
        "0 id10270/a/00002.wav id10271/missing/00001.wav",
        "1 id10271/b/00001.wav id10271/b/00002.wav",
    ])
    trials = TrialList(data)
    assert len(trials) == 2 and trials.skipped == 2
    assert [path.name for path in trials.paths] == ["a_00001.npy", "a_00002.npy", "b_00001.npy"]
    assert trials.labels.tolist() == [1, 0]
    assert trials.first.tolist() == [0, 0] and trials.second.tolist() == [1, 2]
    windows = trials.utterance_dataset()
    assert len(windows) == 3 and windows[2][1] == 2 and windows[2][0].shape == (1, PARTIAL_N_FRAMES, BINS)


def test_trial_list_with_no_usable_trial_fails_in_one_line(tmp_path):
    data = write_corpus(tmp_path, {"id10270": {"a_00001.npy": 400}}, sub_dir="test")
    write_trials(data, ["1 id10270/x/00001.wav id10270/x/00002.wav", "0 id10270/a/00001.wav id10271/y/00001.wav"])
    with pytest.raises(DataError, match="none of its 2 trials") as raised:
        TrialList(data)
    assert "\n" not in str(raised.value)


def test_missing_statistics_or_features_are_named(tmp_path, corpus):
    with pytest.raises(DataError, match="mean.npy not found"):
        SpectrogramDataset(tmp_path / "elsewhere")
    (corpus / voxceleb.STD_FILE).unlink()
    with pytest.raises(DataError, match="std.npy not found"):
        SpectrogramDataset(corpus, partition="train")
