"""A small synthetic corpus in VoxCeleb1's exact layout, for demos and tests without the real data.

    python -m data_objects.synthetic OUT_DIR [--seed 0] [--dev_speakers 24 --test_speakers 8 --videos 3 --utterances 4]

Speech comes from source-filter synthesis. A speaker keeps the same traits everywhere: pitch range, vocal-tract
length (a formant scale) and personal vowel formants, spectral tilt, breathiness and speaking rate. Each video
has its own channel: equalisation, band limits, additive noise and level. Each utterance has new content: a
random sequence of vowel-like and consonant-like segments with a pitch contour. The channel changes the average
spectrum much more than the speaker does, so a system that only compares long-term spectra confuses channels and
speakers, while the speaker's traits (pitch, harmonics, formant pattern) stay there for a network to learn.
Everything is drawn from the seed, so a corpus is reproducible file by file.
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import string
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile
from scipy import signal

from data_objects import available_cores, voxceleb, write_data_file, write_data_lines
from data_objects.errors import DataError
from utils.cli import OneLineErrorParser

SAMPLE_RATE = 16_000
MIN_SECONDS, MAX_SECONDS = 4.0, 6.0
FIRST_SPEAKER = 10001
VIDEO_ID_CHARACTERS = string.ascii_letters + string.digits + "-_"

# Adult male formants F1-F3 (Hz) of ten vowels (Peterson & Barney); a speaker scales and perturbs them.
VOWELS = np.array([
    [270, 2290, 3010], [390, 1990, 2550], [530, 1840, 2480], [660, 1720, 2410], [730, 1090, 2440],
    [570, 840, 2410], [440, 1020, 2240], [300, 870, 2240], [640, 1190, 2390], [490, 1350, 1690],
], dtype=np.float64)
BANDWIDTHS = np.array([70.0, 100.0, 140.0, 200.0, 260.0])
EQ_PEAKS = 3
EQ_GAIN_DB = (1.5, 6.0)
SNR_DB = (25.0, 45.0)
FRICATIVES = ((4000.0, 7500.0), (2200.0, 4800.0), (1200.0, 7000.0))  # s-like, sh-like, f-like bands


@dataclass(frozen=True)
class SpeakerTraits:
    female: bool
    f0: float  # median pitch, Hz
    pitch_range: float  # semitones of contour excursion
    formant_scale: float  # shorter vocal tract -> higher formants
    vowel_formants: np.ndarray  # [10, 5]: F1-F3 per vowel, then the speaker's F4 and F5
    bandwidth_scale: float
    tilt: float  # one-pole low-pass coefficient of the glottal source
    breathiness: float  # aspiration noise relative to the voiced source
    rate: float  # syllables faster (> 1) or slower than average
    fricative_shift: float


@dataclass(frozen=True)
class Channel:
    sos: np.ndarray  # equalisation and band limits
    snr_db: float
    noise_tilt: float
    level_dbfs: float


def _rng(seed: int, *path: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *path]))


def draw_speaker(rng: np.random.Generator) -> SpeakerTraits:
    female = rng.random() < 0.5
    f0 = float(np.exp(rng.normal(np.log(210.0 if female else 120.0), 0.15)))
    scale = float((1.15 if female else 1.0) * np.exp(rng.normal(0.0, 0.08)))
    personal = np.exp(rng.normal(0.0, 0.10, size=(1, 3)) + rng.normal(0.0, 0.05, size=VOWELS.shape))
    upper = np.array([rng.uniform(3300.0, 3900.0), rng.uniform(4300.0, 5000.0)])
    formants = np.concatenate([VOWELS * personal, np.broadcast_to(upper, (len(VOWELS), 2))], axis=1) * scale
    return SpeakerTraits(
        female=female,
        f0=f0,
        pitch_range=float(rng.uniform(1.5, 5.0)),
        formant_scale=scale,
        vowel_formants=np.minimum(formants, 0.45 * SAMPLE_RATE),
        bandwidth_scale=float(rng.uniform(0.7, 1.4)),
        tilt=float(rng.uniform(0.5, 0.93)),
        breathiness=float(rng.uniform(0.02, 0.35)),
        rate=float(rng.uniform(0.75, 1.3)),
        fricative_shift=float(np.exp(rng.normal(0.0, 0.08))),
    )


def _peaking(frequency: float, gain_db: float, q: float) -> np.ndarray:
    """RBJ peaking equaliser as one second-order section."""
    a = 10.0 ** (gain_db / 40.0)
    w0 = 2.0 * np.pi * frequency / SAMPLE_RATE
    alpha = np.sin(w0) / (2.0 * q)
    b = np.array([1.0 + alpha * a, -2.0 * np.cos(w0), 1.0 - alpha * a])
    den = np.array([1.0 + alpha / a, -2.0 * np.cos(w0), 1.0 - alpha / a])
    return np.concatenate([b / den[0], den / den[0]])[None, :]


def draw_channel(rng: np.random.Generator) -> Channel:
    sections = [
        _peaking(float(np.exp(rng.uniform(np.log(200.0), np.log(6000.0)))),
                 float(rng.choice([-1, 1]) * rng.uniform(*EQ_GAIN_DB)), float(rng.uniform(0.7, 2.0)))
        for _ in range(EQ_PEAKS)
    ]
    sections.append(signal.butter(2, rng.uniform(60.0, 250.0), "highpass", fs=SAMPLE_RATE, output="sos"))
    sections.append(signal.butter(4, rng.uniform(5500.0, 7800.0), "lowpass", fs=SAMPLE_RATE, output="sos"))
    return Channel(
        sos=np.concatenate(sections),
        snr_db=float(rng.uniform(*SNR_DB)),
        noise_tilt=float(rng.uniform(0.0, 0.95)),
        level_dbfs=float(rng.uniform(-36.0, -26.0)),
    )


def _resonator_sos(frequencies: np.ndarray, bandwidths: np.ndarray) -> np.ndarray:
    """Cascade of two-pole resonators with unit gain at 0 Hz, one section per formant."""
    radius = np.exp(-np.pi * bandwidths / SAMPLE_RATE)
    theta = 2.0 * np.pi * frequencies / SAMPLE_RATE
    a1, a2 = -2.0 * radius * np.cos(theta), radius**2
    gain = 1.0 + a1 + a2
    zeros = np.zeros_like(gain)
    return np.stack([gain, zeros, zeros, np.ones_like(gain), a1, a2], axis=1)


def _segments(rng: np.random.Generator, n_samples: int, rate: float) -> list[tuple[str, int, int, int]]:
    """(kind, index, start, end) covering the utterance: syllables of consonant + vowel, with pauses."""
    segments, position = [], int(rng.uniform(0.05, 0.25) * SAMPLE_RATE)
    while position < n_samples:
        if rng.random() < 0.08:
            kind, index, seconds = "pause", 0, rng.uniform(0.12, 0.35)
        else:
            if rng.random() < 0.6:
                kind, seconds = ("fricative", rng.uniform(0.05, 0.13)) if rng.random() < 0.6 else ("stop", rng.uniform(0.03, 0.07))
                index = int(rng.integers(len(FRICATIVES)))
                length = int(seconds / rate * SAMPLE_RATE)
                segments.append((kind, index, position, min(position + length, n_samples)))
                position += length
            kind, index, seconds = "vowel", int(rng.integers(len(VOWELS))), rng.uniform(0.08, 0.26)
        length = int(seconds / rate * SAMPLE_RATE)
        segments.append((kind, index, position, min(position + length, n_samples)))
        position += length
    return [s for s in segments if s[3] - s[2] > 0]


def _pitch_contour(rng: np.random.Generator, traits: SpeakerTraits, n_samples: int) -> np.ndarray:
    knots = max(int(n_samples / SAMPLE_RATE / 0.25), 2) + 1
    positions = np.linspace(0, n_samples, knots)
    semitones = rng.normal(0.0, traits.pitch_range / 2.0, size=knots) - np.linspace(0, traits.pitch_range / 2.0, knots)
    contour = np.interp(np.arange(n_samples), positions, semitones)
    smooth = signal.windows.hann(SAMPLE_RATE // 10)
    contour = np.convolve(contour, smooth / smooth.sum(), mode="same")
    return traits.f0 * 2.0 ** (contour / 12.0)


def synthesize_utterance(rng: np.random.Generator, traits: SpeakerTraits, channel: Channel) -> np.ndarray:
    n_samples = int(rng.uniform(MIN_SECONDS, MAX_SECONDS) * SAMPLE_RATE)
    f0 = _pitch_contour(rng, traits, n_samples)
    phase = np.cumsum(f0 / SAMPLE_RATE)
    glottal = signal.lfilter([1.0 - traits.tilt], [1.0, -traits.tilt], 2.0 * (phase % 1.0) - 1.0)
    aspiration = rng.standard_normal(n_samples) * traits.breathiness * 0.6
    noise = rng.standard_normal(n_samples)
    speech = np.zeros(n_samples + SAMPLE_RATE // 10)
    fade = int(0.015 * SAMPLE_RATE)
    bandwidths = BANDWIDTHS * traits.bandwidth_scale
    for kind, index, start, end in _segments(rng, n_samples, traits.rate):
        if kind == "pause":
            continue
        lo, hi = max(start - fade, 0), min(end + fade, n_samples)
        envelope = np.ones(hi - lo)
        ramp = np.sin(np.linspace(0.0, np.pi / 2.0, min(2 * fade, (hi - lo) // 2))) ** 2
        envelope[: len(ramp)] *= ramp
        envelope[len(envelope) - len(ramp) :] *= ramp[::-1]
        if kind == "vowel":
            excitation = (glottal[lo:hi] + aspiration[lo:hi]) * envelope * rng.uniform(0.7, 1.2)
            sos = _resonator_sos(traits.vowel_formants[index], bandwidths)
        else:
            low, high = (np.array(FRICATIVES[index]) * traits.fricative_shift).clip(100.0, 7900.0)
            excitation = noise[lo:hi] * envelope * (0.25 if kind == "fricative" else 0.5)
            if kind == "stop":
                excitation[: int(0.6 * len(excitation))] = 0.0
            sos = signal.butter(2, [low, high], "bandpass", fs=SAMPLE_RATE, output="sos")
        tail = np.zeros(SAMPLE_RATE // 20)
        speech[lo : hi + len(tail)] += signal.sosfilt(sos, np.concatenate([excitation, tail]))
    speech = speech[:n_samples]
    voiced = signal.sosfilt(channel.sos, speech)
    background = signal.lfilter([1.0], [1.0, -channel.noise_tilt], rng.standard_normal(n_samples))
    speech_power = np.mean(voiced**2)
    background *= np.sqrt(speech_power / np.mean(background**2) / 10.0 ** (channel.snr_db / 10.0))
    mixed = voiced + background
    level = channel.level_dbfs + rng.normal(0.0, 1.5)
    mixed *= 10.0 ** (level / 20.0) / np.sqrt(np.mean(mixed**2))
    return np.clip(mixed, -1.0, 1.0).astype(np.float32)


# ----- the corpus -----
@dataclass(frozen=True)
class CorpusPlan:
    seed: int
    dev_speakers: int
    test_speakers: int
    videos: int
    utterances: int

    def speakers(self) -> list[tuple[str, str]]:
        """(subset, speaker id) in id order: dev speakers first, then test speakers."""
        total = self.dev_speakers + self.test_speakers
        return [("dev" if i < self.dev_speakers else "test", f"id{FIRST_SPEAKER + i}") for i in range(total)]

    def video_ids(self, speaker_index: int) -> list[str]:
        rng = _rng(self.seed, speaker_index, 1_000_000)
        return ["".join(rng.choice(list(VIDEO_ID_CHARACTERS), size=11)) for _ in range(self.videos)]

    def utterance_paths(self, speaker_index: int) -> list[tuple[int, str]]:
        """(video index, '<speaker>/<video>/<NNNNN>.wav') of one speaker."""
        speaker = self.speakers()[speaker_index][1]
        return [
            (v, f"{speaker}/{video}/{u + 1:05d}.wav")
            for v, video in enumerate(self.video_ids(speaker_index))
            for u in range(self.utterances)
        ]


def write_speaker(task: tuple[CorpusPlan, int, Path]) -> int:
    """Synthesize and write every utterance of one speaker; returns the number of files."""
    plan, speaker_index, out_dir = task
    subset = plan.speakers()[speaker_index][0]
    traits = draw_speaker(_rng(plan.seed, speaker_index))
    channels = [draw_channel(_rng(plan.seed, speaker_index, v + 1)) for v in range(plan.videos)]
    paths = plan.utterance_paths(speaker_index)
    for number, (video, relative) in enumerate(paths):
        samples = synthesize_utterance(_rng(plan.seed, speaker_index, video + 1, number + 1), traits, channels[video])
        target = out_dir / subset / "wav" / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        write_data_file(target, lambda handle: soundfile.write(handle, samples, SAMPLE_RATE, "PCM_16", format="WAV"))
    return len(paths)


def iden_split_lines(plan: CorpusPlan) -> list[str]:
    """Every speaker: earlier videos train; the last video's first half val, second half test."""
    lines = []
    for index in range(len(plan.speakers())):
        for video, relative in plan.utterance_paths(index):
            number = int(relative.rsplit("/", 1)[1][:5])
            partition = 1 if video < plan.videos - 1 else (2 if number <= plan.utterances // 2 else 3)
            lines.append(f"{partition} {relative}")
    return lines


def trial_lines(plan: CorpusPlan) -> list[str]:
    """Every same-speaker pair of the test speakers, and as many different-speaker pairs, shuffled."""
    rng = _rng(plan.seed, 2_000_000)
    test = [i for i, (subset, _) in enumerate(plan.speakers()) if subset == "test"]
    by_speaker = {i: [p for _, p in plan.utterance_paths(i)] for i in test}
    targets = [(1, a, b) for i in test for j, a in enumerate(by_speaker[i]) for b in by_speaker[i][j + 1 :]]
    nontargets = []
    for _, first, _ in targets:
        own = first.split("/")[0]
        others = [p for i in test for p in by_speaker[i] if not p.startswith(own + "/")]
        nontargets.append((0, first, others[int(rng.integers(len(others)))]))
    trials = targets + nontargets
    order = rng.permutation(len(trials))
    lines = []
    for k in order:
        label, a, b = trials[k]
        if rng.random() < 0.5:
            a, b = b, a
        lines.append(f"{label} {a} {b}")
    return lines


def meta_lines(plan: CorpusPlan) -> list[str]:
    lines = ["\t".join(voxceleb.META_HEADER)]
    for index, (subset, speaker) in enumerate(plan.speakers()):
        gender = "f" if draw_speaker(_rng(plan.seed, index)).female else "m"
        lines.append(f"{speaker}\tSynthetic_{index + 1:04d}\t{gender}\tSynthetic\t{subset}")
    return lines


def generate_corpus(out_dir: str | os.PathLike, plan: CorpusPlan, workers: int = 1) -> int:
    """Write the corpus of `plan` under `out_dir`; returns the number of audio files."""
    if min(plan.dev_speakers, plan.test_speakers) < 2 or plan.videos < 2 or plan.utterances < 2:
        raise DataError("a corpus needs at least 2 dev and 2 test speakers, 2 videos and 2 utterances per video")
    out_dir = Path(out_dir)
    taken = [name for name in voxceleb.SUBSETS if (out_dir / name).exists()]
    if taken:
        raise DataError(f"{out_dir} already holds {', '.join(f'{t}/' for t in taken)}; choose an empty folder")
    out_dir.mkdir(parents=True, exist_ok=True)
    tasks = [(plan, index, out_dir) for index in range(len(plan.speakers()))]
    if workers > 1:
        with multiprocessing.get_context().Pool(workers) as pool:
            files = sum(pool.imap_unordered(write_speaker, tasks))
    else:
        files = sum(map(write_speaker, tasks))
    write_data_lines(out_dir / voxceleb.META_FILE, meta_lines(plan))
    write_data_lines(out_dir / voxceleb.SPLIT_FILE, iden_split_lines(plan))
    write_data_lines(out_dir / voxceleb.TRIALS_FILE, trial_lines(plan))
    return files


def _at_least(minimum: int):
    def parse(text: str) -> int:
        if not text.isdigit() or int(text) < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got '{text}'")
        return int(text)

    return parse


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="python -m data_objects.synthetic",
                                     description="Write a synthetic corpus in VoxCeleb1's layout.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=_at_least(0), default=0)
    parser.add_argument("--dev_speakers", type=_at_least(2), default=24)
    parser.add_argument("--test_speakers", type=_at_least(2), default=8)
    parser.add_argument("--videos", type=_at_least(2), default=3)
    parser.add_argument("--utterances", type=_at_least(2), default=4, help="utterances per video")
    parser.add_argument("--workers", type=_at_least(1), default=available_cores())
    args = parser.parse_args(argv)
    plan = CorpusPlan(args.seed, args.dev_speakers, args.test_speakers, args.videos, args.utterances)
    try:
        files = generate_corpus(args.out_dir, plan, args.workers)
    except DataError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"error: {error.filename or args.out_dir}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"wrote {files} utterances of {len(plan.speakers())} speakers to {args.out_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
