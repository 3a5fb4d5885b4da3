"""Rows 1 and 7, and preprocessing's peak memory: a generated corpus in VoxCeleb1's layout, preprocessed by
data_preprocess.py (batched FFT, worker processes) and by the published approach (one process, one file at a
time, librosa's STFT, then mean and std from every feature loaded again)."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile

from benchmarks.common import REPO, Row, bytes_text, interleaved_medians, quiet, seconds_text
from data_objects import available_cores, voxceleb
from data_objects.audio import HOP_LENGTH, N_BINS, N_FFT, WIN_LENGTH, load_waveform, normalize_volume
from data_objects.preprocess import MIN_FRAMES
from data_objects.preprocess import main as preprocess_main
from data_objects.synthetic import CorpusPlan, generate_corpus

# Runs data_preprocess.py in a fresh interpreter and prints the peak resident sizes of the main process and of
# its largest worker (ru_maxrss, KiB on Linux); RUSAGE_CHILDREN covers the pool's workers once they are joined.
PEAK_RSS_SCRIPT = """
import resource, sys
from data_objects.preprocess import main
code = main(sys.argv[1:])
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(code)
"""


@dataclass(frozen=True)
class CorpusSize:
    dev_speakers: int
    test_speakers: int
    videos: int
    utterances: int  # per video

    def plan(self, seed: int) -> CorpusPlan:
        return CorpusPlan(seed, self.dev_speakers, self.test_speakers, self.videos, self.utterances)

    @property
    def total(self) -> int:
        return (self.dev_speakers + self.test_speakers) * self.videos * self.utterances


def make_corpus(root: Path, size: CorpusSize, seed: int = 0) -> Path:
    with quiet():
        generate_corpus(root, size.plan(seed), workers=available_cores())
    return root


def audio_hours(corpus: Path) -> float:
    seconds = sum(soundfile.info(str(path)).duration for subset in voxceleb.SUBSETS
                  for path in (corpus / subset / "wav").glob("*/*/*.wav"))
    return seconds / 3600.0


def published_preprocess(corpus: Path, out_root: Path) -> None:
    """The published pipeline, one process: per audio file, the project's loading and volume normalisation,
    librosa's centred STFT with reflection padding (librosa 0.7's default), np.save and a _sources.txt line;
    then mean.npy and std.npy from every feature loaded again (its compute_mean_std.py)."""
    import librosa  # only this reference uses it; the GPU rows run where librosa may be missing

    for subset in voxceleb.SUBSETS:
        for speaker_dir in sorted((corpus / subset / "wav").iterdir()):
            target = out_root / voxceleb.FEATURE_DIR / subset / speaker_dir.name
            target.mkdir(parents=True)
            sources = []
            for wav in sorted(speaker_dir.glob("*/*.wav")):
                samples = normalize_volume(load_waveform(wav).samples)
                stft = librosa.stft(samples, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH,
                                    window="hann", center=True, pad_mode="reflect")
                frames = np.abs(stft).astype(np.float32).T
                if len(frames) < MIN_FRAMES:
                    continue
                name = f"{wav.parent.name}_{wav.stem}.npy"
                np.save(target / name, frames)
                sources.append(f"{name},{wav}\n")
            (target / voxceleb.SOURCES_FILE).write_text("".join(sources), encoding="utf-8")
    sums, count = np.zeros((2, N_BINS)), 0
    for path in sorted((out_root / voxceleb.FEATURE_DIR).glob("*/*/*.npy")):
        features = np.load(path).astype(np.float64)
        sums += [features.sum(axis=0), (features * features).sum(axis=0)]
        count += len(features)
    mean = sums[0] / count
    np.save(out_root / voxceleb.MEAN_FILE, mean.astype(np.float32))
    np.save(out_root / voxceleb.STD_FILE, np.sqrt(sums[1] / count - mean**2).astype(np.float32))


def our_preprocess(corpus: Path, dtype: str = "float32") -> None:
    with quiet():
        code = preprocess_main([str(corpus), "--workers", str(available_cores()), "--dtype", dtype])
    if code != 0:
        raise RuntimeError(f"data_preprocess.py exited {code} on {corpus}")


def _clear(*paths: Path) -> None:
    for path in paths:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def tree_bytes(root: Path) -> int:
    """Apparent size of every file under `root`; a symbolic link counts as the link, not its target."""
    return sum(os.lstat(os.path.join(folder, name)).st_size
               for folder, _, names in os.walk(root) for name in names)


def feature_difference(ours: Path, published: Path) -> tuple[float, float, int]:
    """Max |ours - published| over every feature file, the largest magnitude seen, and the number of files."""
    worst, largest, files = 0.0, 0.0, 0
    for path in sorted((published / voxceleb.FEATURE_DIR).glob("*/*/*.npy")):
        reference = np.load(path)
        mine = np.load(ours / voxceleb.FEATURE_DIR / path.relative_to(published / voxceleb.FEATURE_DIR))
        worst = max(worst, float(np.abs(mine - reference).max()))
        largest = max(largest, float(reference.max()))
        files += 1
    return worst, largest, files


def peak_rss(corpus: Path) -> tuple[int, int]:
    """Peak resident bytes of data_preprocess.py's main process and of its largest worker."""
    _clear(corpus / voxceleb.FEATURE_DIR)
    process = subprocess.run(
        [sys.executable, "-c", PEAK_RSS_SCRIPT, str(corpus), "--workers", str(available_cores())],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    main_kib, worker_kib = map(int, process.stdout.split()[-2:])
    return main_kib * 1024, worker_kib * 1024


def preprocessing_rows(
    workdir: Path, size: CorpusSize, small: CorpusSize, repetitions: int
) -> tuple[list[Row], list[Row], Path]:
    """Throughput and memory rows, disk rows, and the corpus (left preprocessed by us, float32)."""
    corpus = make_corpus(workdir / "corpus", size)
    published = workdir / "published"
    outputs = (corpus / voxceleb.FEATURE_DIR, corpus / voxceleb.MEAN_FILE, corpus / voxceleb.STD_FILE)

    def ours() -> None:
        _clear(*outputs)
        our_preprocess(corpus)

    def reference() -> None:
        _clear(published)
        published_preprocess(corpus, published)

    seconds = interleaved_medians({"published": reference, "ours": ours}, repetitions)
    hours = audio_hours(corpus)
    worst, largest, files = feature_difference(corpus, published)
    means = [np.load(folder / voxceleb.MEAN_FILE) for folder in (corpus, published)]
    mean_difference = float(np.abs(means[0] - means[1]).max())
    speed = seconds["published"] / seconds["ours"]
    throughput = {name: hours / (value / 60.0) for name, value in seconds.items()}
    rows = [Row(
        f"Preprocessing throughput, {files} utterances ({hours:.2f} h), {available_cores()} worker processes",
        f"{throughput['ours']:.2f} h/min ({seconds_text(seconds['ours'])})",
        f"{throughput['published']:.2f} h/min ({seconds_text(seconds['published'])})",
        speed, ">= 3x, identical features", speed >= 3.0 and worst <= 1e-4,
        f"max feature difference {worst:.1e} (values up to {largest:.0f}); mean.npy difference {mean_difference:.1e}",
    )]

    float32_bytes = tree_bytes(corpus / voxceleb.FEATURE_DIR)
    feature_files = sum(path.stat().st_size for path in (published / voxceleb.FEATURE_DIR).glob("*/*/*.npy"))
    # The published README copied dev and test into merged: every feature file a second time.
    published_bytes = tree_bytes(published / voxceleb.FEATURE_DIR) + feature_files
    _clear(*outputs)
    our_preprocess(corpus, "float16")
    float16_bytes = tree_bytes(corpus / voxceleb.FEATURE_DIR)
    disk_rows = []
    for dtype, stored, goal in (("float32", float32_bytes, 1.9), ("float16", float16_bytes, 3.8)):
        saving = published_bytes / stored
        disk_rows.append(Row(
            f"Disk, feature/ of {files} utterances, {dtype} (merged = links)",
            bytes_text(stored), bytes_text(published_bytes) + " (float32, merged copied)", saving,
            f">= {goal}x", saving >= goal, "apparent sizes; a link counts its own few bytes",
        ))

    small_main, small_worker = peak_rss(make_corpus(workdir / "corpus_small", small, seed=1))
    large_main, large_worker = peak_rss(corpus)  # leaves the corpus preprocessed in float32 for the other rows
    growth = max(large_main, large_worker) / max(small_main, small_worker)
    rows.append(Row(
        f"Preprocessing peak memory (RSS), {size.total} vs {small.total} utterances",
        f"{bytes_text(large_main)} main / {bytes_text(large_worker)} worker ({size.total} utterances)",
        f"{bytes_text(small_main)} main / {bytes_text(small_worker)} worker ({small.total} utterances)",
        1.0 / growth, ">= 0.9x (bounded: no growth with the corpus)", growth <= 1.0 / 0.9,
        "reference column = the same code on the smaller corpus; ratio = smaller peak / larger peak",
    ))
    return rows, disk_rows, corpus
