"""Row 6: loading one training crop. Ours is data_objects.datasets.SpectrogramDataset, which memory-maps the
.npy file and copies out only the window; the published loader read the whole utterance with np.load, then
cropped it. Both then normalise and maybe reverse the window the same way.

Bytes read by the loader = bytes returned by read() calls (the `rchar` field of /proc/self/io, which counts them
whether or not the page cache had them: the .npy header for ours, the whole file for the published loader) + the
bytes taken out of the memory mapping (counted by a wrapper around the mapped array). What the kernel does
around a page fault is its own policy and is reported beside it: the resident size of the file's mapping after
the crop (`Rss` in /proc/self/smaps), which grows by fault-around and, on recent kernels, by whole large
page-cache folios (up to 2 MiB). Disk reads (`read_bytes`, after evicting the file with posix_fadvise) would
measure the device's read-ahead instead: 8 MiB on this machine's disk, the whole of most utterances either way.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator
from unittest import mock

import numpy as np
import torch

from benchmarks.common import Row, bytes_text, interleaved_medians, seconds_text
from data_objects import datasets, voxceleb
from data_objects.audio import N_BINS
from data_objects.datasets import PARTIAL_N_FRAMES, SpectrogramDataset, random_window

# VoxCeleb1's mean utterance (8.2 s), a 30-second and a 2-minute one.
LENGTHS = (820, 3000, 12000)
HEADLINE_LENGTH = LENGTHS[0]


def write_features(root: Path, lengths: tuple[int, ...], per_length: int) -> Path:
    """A data folder with `per_length` random float32 feature files of each length, one speaker folder per length."""
    rng = np.random.default_rng(0)
    for length in lengths:
        speaker = root / voxceleb.FEATURE_DIR / "dev" / f"id{length:05d}"
        speaker.mkdir(parents=True)
        names = [f"clip{index:03d}_00001.npy" for index in range(per_length)]
        for name in names:
            np.save(speaker / name, rng.random((length, N_BINS), dtype=np.float32))
        (speaker / voxceleb.SOURCES_FILE).write_text("".join(f"{n},none\n" for n in names), encoding="utf-8")
    np.save(root / voxceleb.MEAN_FILE, np.full(N_BINS, 0.5, dtype=np.float32))
    np.save(root / voxceleb.STD_FILE, np.full(N_BINS, 0.3, dtype=np.float32))
    return root


def whole_file_item(dataset: SpectrogramDataset, index: int) -> tuple[torch.Tensor, int]:
    """The published training item: the whole utterance read, then a random window, normalised, maybe reversed."""
    path, label = dataset.utterances[index]
    window = dataset.normalize(random_window(np.load(path), dataset.partial_n_frames))
    if torch.rand(()).item() < 0.5:
        window = window[::-1]
    return torch.from_numpy(np.ascontiguousarray(window)), label


def _read_chars() -> int:
    with open("/proc/self/io", encoding="ascii") as io_counters:
        for line in io_counters:
            if line.startswith("rchar:"):
                return int(line.split()[1])
    raise RuntimeError("/proc/self/io has no rchar field")


def _mapped_bytes(path: Path) -> int:
    """Resident bytes of every mapping of `path` in this process."""
    total, inside = 0, False
    target = os.fspath(path.resolve())
    with open("/proc/self/smaps", encoding="utf-8") as smaps:
        for line in smaps:
            fields = line.split()
            if "-" in fields[0] and len(fields) >= 5:  # a mapping's header line
                inside = len(fields) >= 6 and fields[5] == target
            elif inside and fields[0] == "Rss:":
                total += int(fields[1]) * 1024
    return total


class CountingArray:
    """Stands in for a memory-mapped feature array and counts the bytes the loader takes out of it."""

    def __init__(self, mapped: np.ndarray) -> None:
        self.mapped, self.taken = mapped, 0

    def __len__(self) -> int:
        return len(self.mapped)

    def __getitem__(self, key) -> np.ndarray:
        part = self.mapped[key]
        self.taken += part.nbytes
        return part

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        self.taken += self.mapped.nbytes
        return np.asarray(self.mapped, dtype=dtype)


@contextmanager
def _counted_loads() -> Iterator[list[CountingArray]]:
    """Wrap every array load_features returns; keeping them alive also keeps their mappings to measure."""
    loaded: list[CountingArray] = []
    original = datasets.load_features

    def counting(path: Path) -> CountingArray:
        loaded.append(CountingArray(original(path)))
        return loaded[-1]

    with mock.patch.object(datasets, "load_features", counting):
        yield loaded


def bytes_per_item(dataset: SpectrogramDataset, indices: list[int], whole_file: bool) -> tuple[float, float]:
    """Mean bytes read by the loader, and mean resident bytes of the file's mapping, per item."""
    idle = _read_chars()
    idle = _read_chars() - idle  # what reading /proc/self/io itself adds
    read, resident = 0, 0
    for index in indices:
        with _counted_loads() as loaded:
            before = _read_chars()
            if whole_file:
                whole_file_item(dataset, index)
            else:
                dataset[index]
            read += _read_chars() - before - idle + sum(array.taken for array in loaded)
            resident += _mapped_bytes(dataset.utterances[index][0])
    return read / len(indices), resident / len(indices)


def crop_rows(workdir: Path, per_length: int, repetitions: int) -> list[Row]:
    dataset = SpectrogramDataset(write_features(workdir / "crops", LENGTHS, per_length), "dev", None)
    by_length = {length: [i for i, (path, _) in enumerate(dataset.utterances) if path.parent.name == f"id{length:05d}"]
                 for length in LENGTHS}
    ours = {length: bytes_per_item(dataset, indices, whole_file=False) for length, indices in by_length.items()}
    whole = {length: bytes_per_item(dataset, indices, whole_file=True)[0] for length, indices in by_length.items()}

    def loader(length: int, whole_file: bool) -> Callable[[], None]:
        def run() -> None:
            for index in by_length[length]:
                if whole_file:
                    whole_file_item(dataset, index)
                else:
                    dataset[index]
        return run

    runs = {f"{kind} {length}": loader(length, kind == "whole") for length in LENGTHS for kind in ("ours", "whole")}
    seconds = {name: value / per_length for name, value in interleaved_medians(runs, repetitions).items()}

    window = PARTIAL_N_FRAMES * N_BINS * 4
    read = {length: ours[length][0] for length in LENGTHS}
    flat = max(read.values()) / min(read.values())
    others = ", ".join(f"{length} frames: {bytes_text(read[length])} vs {bytes_text(whole[length])}"
                       for length in LENGTHS[1:])
    mapped = ", ".join(bytes_text(ours[length][1]) for length in LENGTHS)
    other_times = ", ".join(f"{length} frames: {seconds_text(seconds[f'ours {length}'])} vs "
                            f"{seconds_text(seconds[f'whole {length}'])}" for length in LENGTHS[1:])
    head = HEADLINE_LENGTH
    return [
        Row(f"Training crop, bytes read per sample ({head}-frame utterance, VoxCeleb1's mean; window "
            f"{PARTIAL_N_FRAMES} frames = {bytes_text(window)})",
            bytes_text(read[head]), bytes_text(whole[head]), whole[head] / read[head],
            "bytes follow the window, not the utterance", flat <= 1.05,
            f"{others}; ours varies {flat:.2f}x across lengths. Pages the kernel mapped for our crop: {mapped} "
            f"(fault-around and large page-cache folios)"),
        Row(f"Training crop, time per sample ({head}-frame utterance, warm page cache)",
            seconds_text(seconds[f"ours {head}"]), seconds_text(seconds[f"whole {head}"]),
            seconds[f"whole {head}"] / seconds[f"ours {head}"], "none set (reported)", None, other_times),
    ]
