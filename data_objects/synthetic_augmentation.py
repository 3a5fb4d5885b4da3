"""Generated augmentation data for the synthetic corpus: a small folder in MUSAN's layout and room impulse responses.

    python -m data_objects.synthetic_augmentation OUT_DIR [--seed 0] [--files 6]

writes OUT_DIR/musan/{noise,music,speech}/*.wav (coloured and modulated noise; music-like notes and chords;
speech of speakers who are not in any corpus, for babble) and OUT_DIR/rirs/*.wav (exponentially decaying noise
after a direct path, reverberation times 0.2-0.9 s). Use them as AUGMENT.NOISE_DIR OUT_DIR/musan and
AUGMENT.RIR_DIR OUT_DIR/rirs. Everything is drawn from the seed.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import soundfile
from scipy import signal

from data_objects import write_data_file
from data_objects.synthetic import SAMPLE_RATE, _at_least, _rng, draw_channel, draw_speaker, synthesize_utterance
from utils.cli import OneLineErrorParser

# Seeds of the babble speakers start far from the corpus speakers' indices.
BABBLE_SPEAKER_OFFSET = 500_000
# Direct-to-reverberant energy ratio of the generated rooms: a talker a metre or two from the microphone in an
# ordinary room. A tail of unit-amplitude noise instead carries 10-20 dB more energy than the direct path, which
# buries a one-second crop in reverberation.
DIRECT_TO_REVERBERANT_DB = (0.0, 10.0)


def coloured_noise(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """White, pink-ish or brown-ish noise with a slow level modulation, such as fans, traffic or rain."""
    n = int(seconds * SAMPLE_RATE)
    pole = rng.choice([0.0, 0.9, 0.99])
    noise = signal.lfilter([1.0], [1.0, -pole], rng.standard_normal(n))
    modulation = 1.0 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 2.0) * np.arange(n) / SAMPLE_RATE)
    return noise * modulation


def music(rng: np.random.Generator, seconds: float) -> np.ndarray:
    """Notes and chords of decaying harmonic tones on an equal-tempered scale, a new one every 0.2-0.6 s."""
    n = int(seconds * SAMPLE_RATE)
    out = np.zeros(n)
    start = 0
    while start < n:
        length = int(rng.uniform(0.2, 0.6) * SAMPLE_RATE)
        t = np.arange(min(length * 2, n - start)) / SAMPLE_RATE
        for semitone in rng.choice(np.arange(-12, 13), size=int(rng.integers(1, 4)), replace=False):
            f0 = 220.0 * 2.0 ** (semitone / 12.0)
            for harmonic in range(1, 6):
                if f0 * harmonic < SAMPLE_RATE / 2:
                    out[start : start + len(t)] += (np.sin(2 * np.pi * f0 * harmonic * t) / harmonic ** 1.5
                                                    * np.exp(-t * rng.uniform(2.0, 6.0)))
        start += length
    return out


def speech(rng: np.random.Generator, index: int, seed: int) -> np.ndarray:
    speaker_rng = _rng(seed, BABBLE_SPEAKER_OFFSET + index)
    return synthesize_utterance(rng, draw_speaker(speaker_rng), draw_channel(speaker_rng))


def room_impulse_response(rng: np.random.Generator) -> np.ndarray:
    """A direct path after a few ms, then exponentially decaying noise (-60 dB at the reverberation time) whose
    energy sits DIRECT_TO_REVERBERANT_DB below the direct path's, never above half the direct path, which stays
    the largest sample."""
    rt60 = rng.uniform(0.2, 0.9)
    n = int(rt60 * SAMPLE_RATE)
    delay = int(rng.uniform(0.001, 0.005) * SAMPLE_RATE)
    t = np.arange(n) / SAMPLE_RATE
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60)
    tail[: delay + 1] = 0.0
    drr_db = rng.uniform(*DIRECT_TO_REVERBERANT_DB)
    rir = np.clip(tail / np.sqrt(np.sum(np.square(tail)) * 10.0 ** (drr_db / 10.0)), -0.5, 0.5)
    rir[delay] = 1.0
    return rir


def _write(path: Path, samples: np.ndarray, peak: float = 0.5) -> None:
    samples = (samples * (peak / max(np.max(np.abs(samples)), 1e-9))).astype(np.float32)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_data_file(path, lambda handle: soundfile.write(handle, samples, SAMPLE_RATE, "PCM_16", format="WAV"))


def generate_augmentation_data(out_dir: str | Path, seed: int = 0, files: int = 6) -> dict[str, int]:
    """Write the MUSAN-layout folder and the RIRs under `out_dir`; returns the files written per kind."""
    out_dir = Path(out_dir)
    makers = {  # folder: (file name prefix, peak level, generator)
        "musan/noise": ("noise", 0.5, lambda rng, i: coloured_noise(rng, rng.uniform(3.0, 6.0))),
        "musan/music": ("music", 0.5, lambda rng, i: music(rng, rng.uniform(4.0, 8.0))),
        "musan/speech": ("speech", 0.5, lambda rng, i: speech(rng, i, seed)),
        "rirs": ("rir", 0.9, lambda rng, i: room_impulse_response(rng)),
    }
    for kind_index, (kind, (prefix, peak, make)) in enumerate(makers.items()):
        for i in range(files):
            _write(out_dir / kind / f"{prefix}_{i + 1:04d}.wav", make(_rng(seed, 3_000_000 + kind_index, i), i), peak)
    return {kind: files for kind in makers}


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="python -m data_objects.synthetic_augmentation",
                                description="Write generated noise, music, babble speech and room impulse responses.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=_at_least(0), default=0)
    parser.add_argument("--files", type=_at_least(1), default=6, help="files of each kind")
    args = parser.parse_args(argv)
    try:
        written = generate_augmentation_data(args.out_dir, args.seed, args.files)
    except OSError as error:
        print(f"error: {error.filename or args.out_dir}: {error.strerror or error}", file=sys.stderr)
        return 1
    print(f"wrote {', '.join(f'{count} {kind}' for kind, count in written.items())} files to {args.out_dir}; "
          f"use AUGMENT.NOISE_DIR {Path(args.out_dir) / 'musan'} AUGMENT.RIR_DIR {Path(args.out_dir) / 'rirs'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
