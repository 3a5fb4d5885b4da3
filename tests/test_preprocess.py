"""data_preprocess.py (SPEC §2): layout, counts, merged links, partitions, statistics, resume, shards, bad input."""
from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch
from scipy.signal import resample_poly

from data_objects import voxceleb
from data_objects.audio import HOP_LENGTH, N_BINS, SAMPLE_RATE
from data_objects.preprocess import LOG_NAME, MIN_FRAMES, main
from data_objects.synthetic import CorpusPlan, generate_corpus
from tests.conftest import PYTHON, REPO, run_script

PLAN = CorpusPlan(seed=11, dev_speakers=3, test_speakers=2, videos=2, utterances=2)
LISTS = (voxceleb.META_FILE, voxceleb.SPLIT_FILE, voxceleb.TRIALS_FILE)


@pytest.fixture(autouse=True)
def keep_torch_threads():
    # A run with one worker processes in this process and limits torch to one thread, as in a pool worker.
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def wav_corpus(tmp_path_factory) -> Path:
    """The audio and lists of a small corpus, never preprocessed: tests copy it before working on it."""
    data = tmp_path_factory.mktemp("wavs") / "VoxCeleb1"
    generate_corpus(data, PLAN)
    return data


@pytest.fixture(scope="module")
def reference(wav_corpus, tmp_path_factory) -> Path:
    """The corpus preprocessed in one uninterrupted run on two worker processes."""
    data = copy_corpus(wav_corpus, tmp_path_factory.mktemp("reference"))
    assert preprocess(data, "--workers", "2") == 0
    return data


def copy_corpus(source: Path, parent: Path) -> Path:
    return Path(shutil.copytree(source, parent / "VoxCeleb1", ignore=shutil.ignore_patterns(voxceleb.FEATURE_DIR)))


def preprocess(data: Path, *options: str) -> int:
    return main([str(data), *options])


def wav_paths(data: Path) -> list[str]:
    """'<subset>/wav/<speaker>/<video>/<NNNNN>.wav' of every audio file."""
    return sorted(str(p.relative_to(data)) for subset in voxceleb.SUBSETS for p in (data / subset / "wav").rglob("*.wav"))


def feature_path(data: Path, relative_wav: str) -> Path:
    subset, _, speaker, video, file_name = relative_wav.split("/")
    return data / voxceleb.FEATURE_DIR / subset / speaker / f"{video}_{Path(file_name).stem}.npy"


def feature_files(data: Path) -> dict[str, Path]:
    """Every .npy of feature/dev and feature/test, by path relative to feature/."""
    root = data / voxceleb.FEATURE_DIR
    return {str(p.relative_to(root)): p for subset in voxceleb.SUBSETS for p in sorted((root / subset).rglob("*.npy"))}


def listed(folder: Path, name: str) -> list[tuple[str, str]]:
    lines = (folder / name).read_text(encoding="utf-8").splitlines()
    return [tuple(line.split(",", 1)) for line in lines]


def log_text(data: Path) -> str:
    return (data / voxceleb.FEATURE_DIR / LOG_NAME).read_text(encoding="utf-8")


def merged_lists(data: Path) -> dict[str, str]:
    merged = data / voxceleb.FEATURE_DIR / voxceleb.MERGED
    return {str(p.relative_to(merged)): p.read_text(encoding="utf-8") for p in sorted(merged.glob("*/_sources*.txt"))}


def assert_same_output(data: Path, expected: Path) -> None:
    """Bit-identical features, mean.npy, std.npy and merged lists."""
    ours, theirs = feature_files(data), feature_files(expected)
    assert sorted(ours) == sorted(theirs)
    for name, path in ours.items():
        assert path.read_bytes() == theirs[name].read_bytes(), name
    for name in (voxceleb.MEAN_FILE, voxceleb.STD_FILE):
        assert (data / name).read_bytes() == (expected / name).read_bytes(), name
    assert merged_lists(data) == merged_lists(expected)


def one_stderr_line(capsys) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ----- a complete run -----
def test_every_wav_gives_one_feature_listed_in_its_speaker_folder(reference):
    wavs = wav_paths(reference)
    assert len(wavs) == 20
    for relative in wavs:
        features = np.load(feature_path(reference, relative))
        n_samples = soundfile.info(reference / relative).frames
        assert features.dtype == np.float32 and features.shape == (1 + n_samples // HOP_LENGTH, N_BINS)
    assert len(feature_files(reference)) == len(wavs)
    for subset, speaker in PLAN.speakers():
        folder = reference / voxceleb.FEATURE_DIR / subset / speaker
        entries = listed(folder, voxceleb.SOURCES_FILE)
        assert len(entries) == PLAN.videos * PLAN.utterances
        for npy_name, relative in entries:
            assert (folder / npy_name).is_file() and feature_path(reference, relative) == folder / npy_name
    assert "utterances written: 20" in log_text(reference) and "utterances dropped: 0" in log_text(reference)


def test_merged_links_every_feature_without_copying(reference):
    merged = reference / voxceleb.FEATURE_DIR / voxceleb.MERGED
    assert sorted(p.name for p in merged.iterdir()) == sorted(speaker for _, speaker in PLAN.speakers())
    entries = [entry for entry in merged.glob("*/*") if not entry.name.startswith("_sources")]
    assert len(entries) == 20
    # Apart from the lists, merged holds no bytes of its own: only links.
    assert sum(entry.lstat().st_size for entry in entries if not entry.is_symlink()) == 0
    for subset, speaker in PLAN.speakers():
        own = reference / voxceleb.FEATURE_DIR / subset / speaker
        for entry in (merged / speaker).glob("*.npy"):
            assert entry.is_symlink() and entry.resolve() == (own / entry.name).resolve()
        assert listed(merged / speaker, voxceleb.SOURCES_FILE) == listed(own, voxceleb.SOURCES_FILE)


def test_partitions_follow_iden_split(reference):
    merged = reference / voxceleb.FEATURE_DIR / voxceleb.MERGED
    expected = {name: set() for name in voxceleb.PARTITIONS.values()}
    for partition, utterance in voxceleb.read_iden_split(reference / voxceleb.SPLIT_FILE):
        expected[partition].add(voxceleb.feature_name(utterance))
    for partition, utterances in expected.items():
        found = {(speaker.name, npy_name) for speaker in merged.iterdir()
                 for npy_name, _ in listed(speaker, voxceleb.sources_file(partition))}
        assert found == utterances and found


def test_mean_and_std_are_those_of_every_frame(reference):
    merged = reference / voxceleb.FEATURE_DIR / voxceleb.MERGED
    frames = np.concatenate([np.load(p).astype(np.float64) for p in sorted(merged.rglob("*.npy"))])
    mean, std = np.load(reference / voxceleb.MEAN_FILE), np.load(reference / voxceleb.STD_FILE)
    assert mean.dtype == std.dtype == np.float32 and mean.shape == std.shape == (N_BINS,)
    np.testing.assert_allclose(mean, frames.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(std, np.sqrt((frames**2).mean(axis=0) - frames.mean(axis=0) ** 2), rtol=1e-5)


# ----- resuming, shards, float16 -----
# Runs data_preprocess with every feature written in two halves, 0.2 s apart; before the second half of the
# n-th feature, the file MARKERS/n appears. Usage: python -c SLOW_WRITES MARKERS DATA_DIR [options].
SLOW_WRITES = """
import io, sys, time
from pathlib import Path
import numpy as np
from data_objects.preprocess import main
markers, save, written = Path(sys.argv[1]), np.save, []
def save_in_two_halves(file, array, *args, **kwargs):
    encoded = io.BytesIO()
    save(encoded, array, *args, **kwargs)
    data = encoded.getvalue()
    handle = file if hasattr(file, "write") else open(file, "wb")
    handle.write(data[: len(data) // 2])
    handle.flush()
    if array.ndim == 2:
        written.append(array)
        (markers / str(len(written))).touch()
    time.sleep(0.2)
    handle.write(data[len(data) // 2 :])
np.save = save_in_two_halves
sys.exit(main(sys.argv[2:]))
"""


def test_a_killed_run_leaves_complete_files_and_resumes_to_the_same_result(wav_corpus, reference, tmp_path):
    data = copy_corpus(wav_corpus, tmp_path)
    markers = tmp_path / "markers"
    markers.mkdir()
    process = subprocess.Popen([PYTHON, "-c", SLOW_WRITES, str(markers), str(data), "--workers", "1"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    try:
        # Kill while the third feature is half-written.
        while process.poll() is None and time.monotonic() < deadline and not (markers / "3").exists():
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGKILL)
        assert process.wait(timeout=60) == -signal.SIGKILL, "the run ended before it could be interrupted"
    finally:
        process.kill()
        process.wait()
    survivors = feature_files(data)
    assert len(survivors) == 2
    assert not (data / voxceleb.MEAN_FILE).exists()
    for path in survivors.values():
        features = np.load(path)
        assert features.dtype == np.float32 and features.shape[1] == N_BINS and features.shape[0] >= MIN_FRAMES

    assert preprocess(data, "--workers", "1", "--skip_existing") == 0
    assert f"utterances written: {20 - len(survivors)} (already present: {len(survivors)})" in log_text(data)
    assert not any((data / voxceleb.FEATURE_DIR).rglob(".*.tmp"))
    assert_same_output(data, reference)


def test_sigterm_stops_the_workers_with_one_line_and_the_run_resumes(wav_corpus, reference, tmp_path):
    data = copy_corpus(wav_corpus, tmp_path)
    markers = tmp_path / "markers"
    markers.mkdir()
    process = subprocess.Popen([PYTHON, "-c", SLOW_WRITES, str(markers), str(data), "--workers", "2"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    try:
        while process.poll() is None and time.monotonic() < deadline and not (markers / "3").exists():
            time.sleep(0.005)
        os.kill(process.pid, signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == 128 + signal.SIGTERM
    lines = [line for line in stderr.splitlines() if line.strip() and "features:" not in line]
    assert lines == ["terminated (SIGTERM); complete features are kept, rerun with --skip_existing to resume"]
    assert not (data / voxceleb.MEAN_FILE).exists()

    assert preprocess(data, "--workers", "1", "--skip_existing") == 0
    assert not any((data / voxceleb.FEATURE_DIR).rglob(".*.tmp"))
    assert_same_output(data, reference)


def test_a_speaker_in_dev_and_test_is_merged_once_from_dev(wav_corpus, tmp_path):
    data = copy_corpus(wav_corpus, tmp_path)
    speaker = sorted((data / "dev" / "wav").iterdir())[0]
    shutil.copytree(speaker, data / "test" / "wav" / speaker.name)
    assert preprocess(data, "--workers", "2") == 0
    links = sorted((data / voxceleb.FEATURE_DIR / voxceleb.MERGED / speaker.name).glob("*.npy"))
    assert len(links) == len(list(speaker.glob("*/*.wav")))
    assert all(os.readlink(link) == os.path.join("..", "..", "dev", speaker.name, link.name) for link in links)
    assert log_text(data).count("already in merged from another subset; not linked") == len(links)
    assert not list((data / voxceleb.FEATURE_DIR).glob(f".{voxceleb.MERGED}.*"))


def test_shards_then_finalize_equal_one_run(wav_corpus, reference, tmp_path, capsys):
    data = copy_corpus(wav_corpus, tmp_path)
    assert preprocess(data, "--workers", "1", "--shard", "2/2") == 0
    assert not (data / voxceleb.MEAN_FILE).exists()
    capsys.readouterr()
    assert preprocess(data, "--finalize") == 2
    message = one_stderr_line(capsys)
    assert "--finalize" in message and "no _sources.txt" in message
    assert preprocess(data, "--workers", "1", "--shard", "1/2") == 0
    assert preprocess(data, "--finalize", "--workers", "1") == 0
    assert_same_output(data, reference)


def test_float16_features_take_half_the_bytes(wav_corpus, reference, tmp_path):
    data = copy_corpus(wav_corpus, tmp_path)
    assert preprocess(data, "--workers", "1", "--dtype", "float16") == 0
    halves, fulls = feature_files(data), feature_files(reference)
    assert sorted(halves) == sorted(fulls)
    for name, path in halves.items():
        half, full = np.load(path), np.load(fulls[name])
        assert half.dtype == np.float16 and half.nbytes * 2 == full.nbytes
        np.testing.assert_allclose(half, full, rtol=1e-3, atol=1e-4)
    data_bytes = sum(p.stat().st_size for p in halves.values())
    assert data_bytes < 0.51 * sum(p.stat().st_size for p in fulls.values())
    np.testing.assert_allclose(np.load(data / voxceleb.MEAN_FILE), np.load(reference / voxceleb.MEAN_FILE), rtol=1e-3)


def test_zero_padding_option_changes_only_the_edge_frames(wav_corpus, reference, tmp_path):
    data = copy_corpus(wav_corpus, tmp_path)
    assert preprocess(data, "--workers", "1", "--pad_mode", "constant") == 0
    assert "constant padding" in log_text(data)
    references = feature_files(reference)
    for name, path in feature_files(data).items():
        zero_padded, reflected = np.load(path), np.load(references[name])
        assert np.array_equal(zero_padded[2:-2], reflected[2:-2]), name
        assert not np.array_equal(zero_padded[:2], reflected[:2]), name


def test_vad_option_trims_long_silences(wav_corpus, reference, tmp_path):
    data = copy_corpus(wav_corpus, tmp_path)
    padded = wav_paths(data)[0]
    samples, _ = soundfile.read(data / padded, dtype="float32")
    silence = np.zeros(3 * SAMPLE_RATE, dtype=np.float32)
    soundfile.write(data / padded, np.concatenate([silence, samples, silence]), SAMPLE_RATE, subtype="FLOAT")
    assert preprocess(data, "--workers", "1", "--vad") == 0
    assert "vad on" in log_text(data)
    trimmed, original = np.load(feature_path(data, padded)), np.load(feature_path(reference, padded))
    assert len(original) - 50 <= len(trimmed) <= len(original) + 100


# ----- the download script (never run here: it needs the network and credentials) -----
DOWNLOAD_SCRIPT = str(REPO / "dl_script.sh")


def test_download_script_is_valid_bash():
    syntax = subprocess.run(["bash", "-n", DOWNLOAD_SCRIPT], capture_output=True, text=True)
    assert syntax.returncode == 0, syntax.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck is not installed")
def test_download_script_is_shellcheck_clean():
    lint = subprocess.run(["shellcheck", DOWNLOAD_SCRIPT], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout


# ----- bad input -----
def test_missing_data_folder_is_one_line_and_exit_2(tmp_path):
    process = run_script("data_preprocess.py", str(tmp_path / "nowhere"), check=False)
    assert process.returncode == 2
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1 and "nowhere" in lines[0] and "Traceback" not in process.stderr


def skeleton(folder: Path, missing: str = "") -> Path:
    """The folders and list files of the layout, with no audio, less `missing`."""
    for subset in voxceleb.SUBSETS:
        if f"{subset}/wav" != missing:
            (folder / subset / "wav").mkdir(parents=True)
    for name in LISTS:
        if name != missing:
            (folder / name).write_text("\t".join(voxceleb.META_HEADER) + "\n" if name == voxceleb.META_FILE else "")
    return folder


@pytest.mark.parametrize("missing", ["dev/wav", "test/wav", *LISTS])
def test_each_missing_part_of_the_layout_is_named_before_any_work(tmp_path, capsys, missing):
    data = skeleton(tmp_path, missing)
    assert preprocess(data) == 2
    message = one_stderr_line(capsys)
    assert missing in message
    assert not (data / voxceleb.FEATURE_DIR).exists()


@pytest.mark.parametrize("name, line", [
    (voxceleb.SPLIT_FILE, "4 id10001/abc/00001.wav"),
    (voxceleb.SPLIT_FILE, "1 id10001/00001.wav"),
    (voxceleb.TRIALS_FILE, "1 id10001/abc/00001.wav"),
    (voxceleb.TRIALS_FILE, "yes id10001/abc/00001.wav id10002/abc/00001.wav"),
])
def test_a_malformed_list_line_is_named_by_file_and_line(wav_corpus, tmp_path, capsys, name, line):
    data = copy_corpus(wav_corpus, tmp_path)
    lines = (data / name).read_text().splitlines()
    lines.insert(2, line)
    (data / name).write_text("\n".join(lines) + "\n")
    assert preprocess(data) == 2
    assert f"{name}:3:" in one_stderr_line(capsys)
    assert not (data / voxceleb.FEATURE_DIR).exists()


def test_bad_audio_is_converted_or_skipped_with_its_reason(wav_corpus, reference, tmp_path):
    data = copy_corpus(wav_corpus, tmp_path)
    wavs = wav_paths(data)
    samples = {relative: soundfile.read(data / relative, dtype="float32")[0] for relative in wavs}
    corrupt, empty, short, silent, stereo, rate_8k, rate_44k = wavs[:7]
    (data / corrupt).write_bytes(np.random.default_rng(0).bytes(3000))
    (data / empty).write_bytes(b"")
    soundfile.write(data / short, samples[short][: 2 * SAMPLE_RATE], SAMPLE_RATE, subtype="PCM_16")
    soundfile.write(data / silent, np.zeros(5 * SAMPLE_RATE), SAMPLE_RATE, subtype="PCM_16")
    soundfile.write(data / stereo, np.stack([samples[stereo]] * 2, axis=1), SAMPLE_RATE, subtype="FLOAT")
    soundfile.write(data / rate_8k, resample_poly(samples[rate_8k], 1, 2), 8000, subtype="FLOAT")
    soundfile.write(data / rate_44k, resample_poly(samples[rate_44k], 441, 160), 44100, subtype="FLOAT")

    assert preprocess(data, "--workers", "2") == 0
    log = log_text(data)
    skipped = {corrupt: "unreadable", empty: "empty", short: "too short", silent: "silent"}
    for relative, reason in skipped.items():
        assert any(f"skipped ({reason}): " in line and f"{relative}:" in line for line in log.splitlines()), relative
        assert not feature_path(data, relative).exists()
    assert "utterances dropped: 4 (empty: 1, silent: 1, too short: 1, unreadable: 1)" in log
    assert "utterances written: 16" in log
    assert f"converted (mixed 2 channels to mono): {stereo}" in log
    assert f"converted (resampled from 8000 Hz): {rate_8k}" in log
    assert f"converted (resampled from 44100 Hz): {rate_44k}" in log

    # A stereo file of two equal channels is its mono self.
    assert np.array_equal(np.load(feature_path(data, stereo)), np.load(feature_path(reference, stereo)))
    for relative, rate in ((rate_8k, 8000), (rate_44k, 44100)):
        stored = soundfile.info(data / relative).frames
        features, original = np.load(feature_path(data, relative)), np.load(feature_path(reference, relative))
        assert features.shape == (1 + math.ceil(stored * SAMPLE_RATE / rate) // HOP_LENGTH, N_BINS)
        common = min(len(features), len(original))
        # Resampled there and back, a 16 kHz corpus keeps its spectrum below the 4 kHz of 8 kHz audio.
        low = slice(0, N_BINS // 2 - 8) if rate == 8000 else slice(None)
        difference = features[:common, low] - original[:common, low]
        assert np.linalg.norm(difference) < 0.1 * np.linalg.norm(original[:common, low])

    # Every audio file gives exactly one feature or one logged drop, and _sources.txt lists exactly the features.
    for relative in wavs:
        drops = [line for line in log.splitlines() if "skipped (" in line and f"{relative}:" in line]
        assert feature_path(data, relative).exists() + len(drops) == 1, relative
    listed_wavs = {wav for subset in voxceleb.SUBSETS for speaker_dir in (data / voxceleb.FEATURE_DIR / subset).iterdir()
                   for _, wav in listed(speaker_dir, voxceleb.SOURCES_FILE)}
    assert listed_wavs == set(wavs) - set(skipped)
