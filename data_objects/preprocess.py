"""VoxCeleb1 wavs -> feature/{dev,test,merged}, mean.npy and std.npy (SPEC §2).

Work is cut into chunks of one speaker's utterances and spread over worker processes. Every feature file is
written under a temporary name and renamed into place, so an interrupted run leaves only complete files and
`--skip_existing` resumes it. The mean and standard deviation come from per-file float64 sums added speaker by
speaker in sorted order: memory stays bounded, and a resumed, sharded or finalize-only run gives the same bits.
"""
from __future__ import annotations

import argparse
import logging
import multiprocessing
import os
import shutil
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from tqdm import tqdm

from data_objects import available_cores, voxceleb, write_data_file, write_data_lines
from data_objects.audio import (
    HOP_LENGTH, N_BINS, PAD_MODE, PAD_MODES, SAMPLE_RATE, check_length, prepare_waveform, spectrograms,
)
from data_objects.errors import AudioError, DataError
from utils.cli import EXIT_INTERRUPTED, EXIT_TERMINATED, OneLineErrorParser, Terminated, sigterm_raises
from utils.files import remove_stale_temporaries
from utils.progress import progress

MIN_FRAMES = 300
CHUNK_UTTERANCES = 16
# Frames per FFT call: large enough to amortise the call, small enough to stay in cache on a CPU.
FRAMES_PER_BATCH = 2048
DTYPES = ("float32", "float16")
LOG_NAME = "preprocess.log"

SpeakerKey = tuple[str, str]  # (subset, speaker)


@dataclass(frozen=True)
class Utterance:
    subset: str
    speaker: str
    relative_wav: str  # path of the audio file relative to DATA_DIR
    npy_name: str


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    dtype: str = "float32"
    vad: bool = False
    pad_mode: str = PAD_MODE
    skip_existing: bool = False
    read_only: bool = False  # --finalize: only read the features that the shards wrote


@dataclass
class Outcome:
    npy_name: str
    relative_wav: str
    status: str  # 'written', 'present' (kept from an earlier run) or 'dropped'
    reason: str = ""
    message: str = ""
    conversions: tuple[str, ...] = ()
    frames: int = 0
    sums: np.ndarray | None = None  # float64 [2, 257]: sum and sum of squares over frames

    @property
    def kept(self) -> bool:
        return self.status != "dropped"


@dataclass
class Totals:
    speakers: Counter = field(default_factory=Counter)
    written: int = 0
    present: int = 0
    frames: int = 0
    dropped: Counter = field(default_factory=Counter)
    conversions: Counter = field(default_factory=Counter)


def speaker_folder(data_dir: Path, subset: str, speaker: str) -> Path:
    return data_dir / voxceleb.FEATURE_DIR / subset / speaker


def feature_sums(features: np.ndarray) -> np.ndarray:
    """Per-bin sum and sum of squares in float64, [2, 257]."""
    values = np.asarray(features, dtype=np.float64)
    return np.stack([values.sum(axis=0), np.einsum("ij,ij->j", values, values)])


def _save_array(path: Path, array: np.ndarray) -> None:
    write_data_file(path, lambda handle: np.save(handle, array))


def _load_present(path: Path, dtype: str | None) -> np.ndarray | None:
    """A complete feature file of the expected shape (and dtype when given), else None."""
    try:
        features = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None
    if features.ndim != 2 or features.shape[1] != N_BINS or features.shape[0] < MIN_FRAMES:
        return None
    if dtype is not None and features.dtype != np.dtype(dtype):
        return None
    return features


def _init_worker() -> None:
    # One thread per process: the processes already use every core.
    torch.set_num_threads(1)


def process_chunk(task: tuple[Settings, Sequence[Utterance]]) -> list[Outcome]:
    """Features of some utterances of one speaker: computed and written, or read back when already present."""
    settings, utterances = task
    outcomes: list[Outcome] = []
    pending: list[tuple[Utterance, np.ndarray, tuple[str, ...]]] = []
    for utterance in utterances:
        target = speaker_folder(settings.data_dir, utterance.subset, utterance.speaker) / utterance.npy_name
        if settings.skip_existing or settings.read_only:
            present = _load_present(target, None if settings.read_only else settings.dtype)
            if present is not None:
                outcomes.append(Outcome(utterance.npy_name, utterance.relative_wav, "present",
                                        frames=present.shape[0], sums=feature_sums(present)))
                continue
            if settings.read_only:
                outcomes.append(Outcome(utterance.npy_name, utterance.relative_wav, "dropped", "missing feature",
                                        f"{target}: listed in {voxceleb.SOURCES_FILE} but missing or incomplete"))
                continue
        try:
            audio_path = settings.data_dir / utterance.relative_wav
            waveform = prepare_waveform(audio_path, vad=settings.vad)
            check_length(waveform.samples, MIN_FRAMES, audio_path)
        except AudioError as error:
            outcomes.append(Outcome(utterance.npy_name, utterance.relative_wav, "dropped", error.reason, str(error)))
            # A feature left by an earlier run with other settings must not outlive its now-dropped source.
            target.unlink(missing_ok=True)
            continue
        pending.append((utterance, waveform.samples, waveform.conversions))
    for batch in _frame_batches(pending):
        features = spectrograms([samples for _, samples, _ in batch], settings.pad_mode)
        for (utterance, _, conversions), feature in zip(batch, features):
            stored = feature.astype(settings.dtype, copy=False)
            folder = speaker_folder(settings.data_dir, utterance.subset, utterance.speaker)
            _save_array(folder / utterance.npy_name, stored)
            outcomes.append(Outcome(utterance.npy_name, utterance.relative_wav, "written", conversions=conversions,
                                    frames=stored.shape[0], sums=feature_sums(stored)))
    return outcomes


def _frame_batches(pending: list) -> Iterable[list]:
    batch, frames = [], 0
    for item in pending:
        batch.append(item)
        frames += 1 + len(item[1]) // HOP_LENGTH
        if frames >= FRAMES_PER_BATCH:
            yield batch
            batch, frames = [], 0
    if batch:
        yield batch


# ----- the corpus -----
def find_utterances(data_dir: Path) -> dict[SpeakerKey, list[Utterance]]:
    """Every audio file of dev/wav and test/wav, grouped by (subset, speaker), sorted."""
    found: dict[SpeakerKey, list[Utterance]] = {}
    for subset in voxceleb.SUBSETS:
        wav_root = data_dir / subset / "wav"
        for speaker_dir in sorted(p for p in wav_root.iterdir() if p.is_dir()):
            utterances = []
            for video_dir in sorted(p for p in speaker_dir.iterdir() if p.is_dir()):
                for audio in sorted(video_dir.iterdir()):
                    if audio.suffix.lower() in voxceleb.AUDIO_SUFFIXES and audio.is_file():
                        relative = f"{subset}/wav/{speaker_dir.name}/{video_dir.name}/{audio.name}"
                        npy_name = f"{video_dir.name}_{audio.stem}.npy"
                        utterances.append(Utterance(subset, speaker_dir.name, relative, npy_name))
            if utterances:
                found[(subset, speaker_dir.name)] = sorted(utterances, key=lambda u: u.npy_name)
    return found


def read_sources(path: Path) -> list[tuple[str, str]]:
    """(npy name, wav path) of every line of a _sources file."""
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            name, sep, wav = line.partition(",")
            if not sep or not name.endswith(".npy"):
                raise DataError(f"{path}:{number}: malformed line, expected '<npy file name>,<wav path>'")
            entries.append((name, wav))
    return entries


def validate_lists(data_dir: Path) -> None:
    """Fail early, naming file and line, on a malformed meta file, split or trial list."""
    voxceleb.check_meta(data_dir / voxceleb.META_FILE)
    voxceleb.read_iden_split(data_dir / voxceleb.SPLIT_FILE)
    voxceleb.read_trials(data_dir / voxceleb.TRIALS_FILE)


def shard_of(keys: Sequence[SpeakerKey], shard: tuple[int, int] | None) -> list[SpeakerKey]:
    """Speakers of shard i of n (1-based): every n-th speaker in sorted order, starting at the i-th."""
    keys = sorted(keys)
    if shard is None:
        return keys
    index, count = shard
    return keys[index - 1 :: count]


def chunk_tasks(settings: Settings, work: dict[SpeakerKey, list[Utterance]]) -> list[tuple[Settings, list[Utterance]]]:
    return [
        (settings, utterances[start : start + CHUNK_UTTERANCES])
        for key, utterances in sorted(work.items())
        for start in range(0, len(utterances), CHUNK_UTTERANCES)
    ]


# ----- the run -----
class _ConsoleHandler(logging.Handler):
    """Log lines printed above the progress bar instead of through it."""

    def emit(self, record: logging.LogRecord) -> None:
        tqdm.write(self.format(record), file=sys.stdout)


def _make_logger(log_path: Path) -> logging.Logger:
    logger = logging.getLogger("data_preprocess")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()
    console = _ConsoleHandler()
    console.setFormatter(logging.Formatter("%(message)s"))
    to_file = logging.FileHandler(log_path, encoding="utf-8")
    to_file.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger.addHandler(console)
    logger.addHandler(to_file)
    return logger


def _close_logger(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


class SpeakerAccumulator:
    """Collects a speaker's outcomes chunk by chunk; when the speaker is complete, folds them in file order."""

    def __init__(self, data_dir: Path, keys: Iterable[SpeakerKey], tasks: Sequence[tuple[Settings, list[Utterance]]],
                 merged: MergedBuilder | None = None):
        self.data_dir, self.merged = data_dir, merged
        self.remaining = Counter((chunk[0].subset, chunk[0].speaker) for _, chunk in tasks)
        self.outcomes: dict[SpeakerKey, list[Outcome]] = {key: [] for key in keys}
        self.sums: dict[SpeakerKey, np.ndarray] = {}
        self.frames: dict[SpeakerKey, int] = {}
        for key in list(self.outcomes):
            if self.remaining[key] == 0:
                self._complete(key)

    def add(self, key: SpeakerKey, outcomes: list[Outcome]) -> None:
        self.outcomes[key].extend(outcomes)
        self.remaining[key] -= 1
        if self.remaining[key] == 0:
            self._complete(key)

    def _complete(self, key: SpeakerKey) -> None:
        kept = sorted((o for o in self.outcomes.pop(key) if o.kept), key=lambda o: o.npy_name)
        total = np.zeros((2, N_BINS), dtype=np.float64)
        for outcome in kept:
            total += outcome.sums
        self.sums[key] = total
        self.frames[key] = sum(o.frames for o in kept)
        folder = speaker_folder(self.data_dir, *key)
        folder.mkdir(parents=True, exist_ok=True)
        write_data_lines(folder / voxceleb.SOURCES_FILE, (f"{o.npy_name},{o.relative_wav}" for o in kept))
        if self.merged is not None:
            self.merged.add_speaker(*key, ((o.npy_name, o.relative_wav) for o in kept))


def run_chunks(
    tasks: list[tuple[Settings, list[Utterance]]], workers: int, logger: logging.Logger, totals: Totals,
    accumulator: SpeakerAccumulator,
) -> None:
    """Process every chunk on `workers` processes, logging each dropped or converted file as it comes back."""
    total_utterances = sum(len(chunk) for _, chunk in tasks)
    with progress(total_utterances, "features", "utt", mininterval=1.0) as bar:
        if workers == 1:
            _init_worker()
            results = map(process_chunk, tasks)
            _consume(results, tasks, logger, totals, accumulator, bar)
        else:
            with multiprocessing.get_context().Pool(workers, initializer=_init_worker) as pool:
                _consume(pool.imap(process_chunk, tasks), tasks, logger, totals, accumulator, bar)


def _consume(results, tasks, logger, totals: Totals, accumulator: SpeakerAccumulator, bar) -> None:
    for (_, chunk), outcomes in zip(tasks, results):
        key = (chunk[0].subset, chunk[0].speaker)
        for outcome in outcomes:
            if outcome.status == "dropped":
                totals.dropped[outcome.reason] += 1
                logger.warning(f"skipped ({outcome.reason}): {outcome.message}")
                continue
            totals.written += outcome.status == "written"
            totals.present += outcome.status == "present"
            totals.frames += outcome.frames
            for conversion in outcome.conversions:
                totals.conversions[conversion] += 1
                logger.info(f"converted ({conversion}): {outcome.relative_wav}")
        accumulator.add(key, outcomes)
        bar.update(len(chunk))


def mean_and_std(sums: dict[SpeakerKey, np.ndarray], frames: dict[SpeakerKey, int]) -> tuple[np.ndarray, np.ndarray]:
    """Per-bin mean and population std over every frame, speakers added in sorted order."""
    total = np.zeros((2, N_BINS), dtype=np.float64)
    for key in sorted(sums):
        total += sums[key]
    count = sum(frames.values())
    mean = total[0] / count
    variance = np.maximum(total[1] / count - mean**2, 0.0)
    return mean.astype(np.float32), np.sqrt(variance).astype(np.float32)


class MergedBuilder:
    """feature/merged: per speaker, relative links to its dev/test features, _sources.txt and the partitions.

    Speakers are linked as they complete, while the workers compute the others (the main process only waits on
    them, and 153,516 links made at the end would add minutes to a VoxCeleb1 run). The folder is built under a
    temporary name and replaces the old one in two renames, so readers never see half of it.
    """

    def __init__(self, data_dir: Path, logger: logging.Logger) -> None:
        self.data_dir, self.logger = data_dir, logger
        self.feature_root = data_dir / voxceleb.FEATURE_DIR
        for leftover in self.feature_root.glob(f".{voxceleb.MERGED}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        self.building = self.feature_root / f".{voxceleb.MERGED}.{os.getpid()}.tmp"
        self.building.mkdir()
        self.sources: dict[str, dict[str, str]] = {}

    def add_speaker(self, subset: str, speaker: str, kept: Iterable[tuple[str, str]]) -> None:
        """Link the (npy name, wav path) features of one speaker folder; speakers come in sorted order."""
        speaker_dir = self.building / speaker
        speaker_dir.mkdir(exist_ok=True)
        entries = self.sources.setdefault(speaker, {})
        for npy_name, wav in kept:
            if npy_name in entries:
                self.logger.warning(f"{subset}/{speaker}/{npy_name}: already in merged from another subset; not linked")
                continue
            os.symlink(os.path.join("..", "..", subset, speaker, npy_name), speaker_dir / npy_name)
            entries[npy_name] = wav

    def finish(self) -> dict[str, int]:
        """Write the lists, put the folder in place; returns the number of utterances per partition."""
        partitions: dict[str, dict[str, list[str]]] = {name: {} for name in voxceleb.PARTITIONS.values()}
        missing = 0
        for partition, utterance in voxceleb.read_iden_split(self.data_dir / voxceleb.SPLIT_FILE):
            speaker, npy_name = voxceleb.feature_name(utterance)
            if npy_name in self.sources.get(speaker, {}):
                partitions[partition].setdefault(speaker, []).append(npy_name)
            else:
                missing += 1
        for speaker, entries in self.sources.items():
            speaker_dir = self.building / speaker
            write_data_lines(speaker_dir / voxceleb.SOURCES_FILE, (f"{n},{entries[n]}" for n in sorted(entries)))
            for partition, by_speaker in partitions.items():
                names = sorted(by_speaker.get(speaker, []))
                write_data_lines(speaker_dir / voxceleb.sources_file(partition), (f"{n},{entries[n]}" for n in names))
        if missing:
            self.logger.info(f"{missing} utterances of {voxceleb.SPLIT_FILE} have no feature (dropped or absent)")
        merged = self.feature_root / voxceleb.MERGED
        retired = self.feature_root / f".{voxceleb.MERGED}.{os.getpid()}.old"
        if merged.exists():
            os.replace(merged, retired)
        os.replace(self.building, merged)
        shutil.rmtree(retired, ignore_errors=True)
        return {name: sum(len(v) for v in by_speaker.values()) for name, by_speaker in partitions.items()}

    def discard(self) -> None:
        shutil.rmtree(self.building, ignore_errors=True)


def finalize(data_dir: Path, accumulator: SpeakerAccumulator, merged: MergedBuilder, logger: logging.Logger) -> None:
    """mean.npy, std.npy and feature/merged from the per-speaker results."""
    if sum(accumulator.frames.values()) == 0:
        raise DataError("no utterance was kept, so there is nothing to compute mean and std from")
    mean, std = mean_and_std(accumulator.sums, accumulator.frames)
    _save_array(data_dir / voxceleb.MEAN_FILE, mean)
    _save_array(data_dir / voxceleb.STD_FILE, std)
    counts = merged.finish()
    logger.info(f"wrote {voxceleb.MEAN_FILE}, {voxceleb.STD_FILE} and feature/{voxceleb.MERGED} "
                f"(train {counts['train']}, val {counts['val']}, test {counts['test']} utterances)")


def _summary(totals: Totals, keys: Sequence[SpeakerKey], seconds: float, logger: logging.Logger) -> None:
    per_subset = Counter(subset for subset, _ in keys)
    logger.info(f"speakers: {len(keys)} ({', '.join(f'{s} {per_subset[s]}' for s in voxceleb.SUBSETS)})")
    logger.info(f"utterances written: {totals.written}" + (f" (already present: {totals.present})" if totals.present else ""))
    logger.info(f"audio: {totals.frames * HOP_LENGTH / SAMPLE_RATE / 3600:.2f} hours")
    dropped = ", ".join(f"{reason}: {n}" for reason, n in sorted(totals.dropped.items()))
    logger.info(f"utterances dropped: {sum(totals.dropped.values())}" + (f" ({dropped})" if dropped else ""))
    if totals.conversions:
        converted = ", ".join(f"{what}: {n}" for what, n in sorted(totals.conversions.items()))
        logger.info(f"utterances converted: {sum(totals.conversions.values())} ({converted})")
    logger.info(f"time: {seconds:.1f} s")


def _finalize_work(data_dir: Path, keys: Sequence[SpeakerKey]) -> dict[SpeakerKey, list[Utterance]]:
    unfinished = [key for key in keys if not (speaker_folder(data_dir, *key) / voxceleb.SOURCES_FILE).is_file()]
    if unfinished:
        subset, speaker = unfinished[0]
        raise DataError(f"{len(unfinished)} speakers have no {voxceleb.SOURCES_FILE} yet (first: "
                        f"feature/{subset}/{speaker}); run every shard before --finalize")
    work = {}
    for key in keys:
        entries = read_sources(speaker_folder(data_dir, *key) / voxceleb.SOURCES_FILE)
        work[key] = [Utterance(key[0], key[1], wav, name) for name, wav in entries]
    return work


def preprocess(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    data_dir = Path(args.data_dir)
    if not data_dir.is_dir():
        raise DataError(f"data directory not found: {data_dir}")
    missing = voxceleb.missing_layout(data_dir)
    if missing:
        raise DataError(f"missing in {data_dir}: {', '.join(missing)}")
    validate_lists(data_dir)
    corpus = find_utterances(data_dir)
    if not corpus:
        raise DataError(f"no {' or '.join(voxceleb.AUDIO_SUFFIXES)} files under {data_dir}/dev/wav or {data_dir}/test/wav")
    keys = sorted(corpus)
    if args.finalize:
        work = _finalize_work(data_dir, keys)
    else:
        work = {key: corpus[key] for key in shard_of(keys, args.shard)}

    feature_root = data_dir / voxceleb.FEATURE_DIR
    feature_root.mkdir(exist_ok=True)
    logger = _make_logger(feature_root / LOG_NAME)
    try:
        settings = Settings(data_dir, args.dtype, args.vad, args.pad_mode, args.skip_existing, read_only=args.finalize)
        mode = "finalize" if args.finalize else (f"shard {args.shard[0]}/{args.shard[1]}" if args.shard else "all")
        logger.info(f"preprocessing {data_dir} ({mode}): {sum(map(len, work.values()))} utterances of {len(work)} "
                    f"speakers, {args.workers} workers, {args.dtype}, {args.pad_mode} padding, vad {'on' if args.vad else 'off'}"
                    + (", skipping existing features" if args.skip_existing else ""))
        if not args.finalize:
            for key in work:
                folder = speaker_folder(data_dir, *key)
                folder.mkdir(parents=True, exist_ok=True)
                remove_stale_temporaries(folder)
        tasks = chunk_tasks(settings, work)
        # A shard builds no merged folder: --finalize does, once every speaker is done.
        merged = None if args.shard and not args.finalize else MergedBuilder(data_dir, logger)
        try:
            accumulator = SpeakerAccumulator(data_dir, work, tasks, merged)
            totals = Totals()
            run_chunks(tasks, args.workers, logger, totals, accumulator)
            if merged is None:
                logger.info(f"shard {args.shard[0]}/{args.shard[1]} done; run with --finalize once every shard has finished")
            else:
                finalize(data_dir, accumulator, merged, logger)
        except BaseException:
            if merged is not None:
                merged.discard()
            raise
        _summary(totals, list(work), time.perf_counter() - started, logger)
    finally:
        _close_logger(logger)
    return 0


def _shard(text: str) -> tuple[int, int]:
    index, sep, count = text.partition("/")
    if not (sep and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
        raise argparse.ArgumentTypeError(f"expected i/n with 1 <= i <= n, got '{text}'")
    return int(index), int(count)


def _workers(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of processes, got '{text}'")
    return int(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = OneLineErrorParser(
        prog="data_preprocess.py",
        description="Compute VoxCeleb1 magnitude-spectrogram features, feature/merged, mean.npy and std.npy.",
    )
    parser.add_argument("data_dir", help="folder with dev/wav, test/wav, vox1_meta.csv, iden_split.txt, veri_test.txt")
    parser.add_argument("--workers", type=_workers, default=available_cores(),
                        help="worker processes (default: every available core)")
    parser.add_argument("--skip_existing", action="store_true",
                        help="keep complete feature files from an earlier (interrupted) run")
    parser.add_argument("--dtype", choices=DTYPES, default="float32", help="stored feature type (float16: half size)")
    parser.add_argument("--vad", action="store_true", help="trim long silences with webrtcvad (off in the paper)")
    parser.add_argument("--pad_mode", choices=PAD_MODES, default=PAD_MODE,
                        help="STFT edge padding: reflect (librosa 0.7, the published features) or constant "
                             "(zeros, librosa >= 0.10's default)")
    parser.add_argument("--shard", type=_shard, default=None, metavar="I/N",
                        help="process only part I of N (1-based, split by speaker); then run --finalize")
    parser.add_argument("--finalize", action="store_true",
                        help="after every shard: compute mean/std, feature/merged and the partitions")
    args = parser.parse_args(argv)
    if args.finalize and args.shard:
        parser.error("--finalize works on every shard's output; do not combine it with --shard")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        with sigterm_raises():
            return preprocess(args)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error.filename}: {error.strerror}" if error.filename else f"error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, Terminated) as stop:
        how = "interrupted" if isinstance(stop, KeyboardInterrupt) else "terminated (SIGTERM)"
        print(f"{how}; complete features are kept, rerun with --skip_existing to resume", file=sys.stderr)
        return EXIT_INTERRUPTED if isinstance(stop, KeyboardInterrupt) else EXIT_TERMINATED
