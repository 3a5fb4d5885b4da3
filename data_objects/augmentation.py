"""Augmentation of training items (SPEC §13): additive noise, reverberation, speed perturbation on the waveform,
SpecAugment masks on the features. Evaluation items are never augmented.

AUGMENT.MODE says how reverberation and noise combine (`AUGMENT_MODES`): `independent` draws each with its own
probability (both may apply); `one_of` applies at most one, reverberation with probability RIR_PROB and noise
with NOISE_PROB (WeSpeaker's: one of them with total probability 0.6 is RIR_PROB 0.3 and NOISE_PROB 0.3).

Every random draw uses torch's generator, which the training loader seeds per item from (seed, epoch, index)
(functions/data_loading.py): an item's augmentation is a function of those three numbers, whichever process or
worker draws it, so exact resume holds with augmentation on. An augmentation whose probability is 0 is not built
and draws nothing, so the published recipe's random stream is untouched.

Noise, music and babble files and room impulse responses are read per item, only the span that is used, so a
folder of any size costs no memory; their headers are read once, when the augmentation is built, and files
that cannot be read are named in the log and skipped.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from yacs.config import CfgNode

from data_objects import audio, voxceleb
from data_objects.errors import AudioError, DataError
from utils.config import ConfigError
from utils.run_logging import get_logger

# MUSAN's sub-folders: (SNR range in dB, how many files are summed: (fewest, most)); 'speech' makes babble, each
# of its files at an SNR of its own (as voxceleb_trainer), so that 5 files at 15 dB each sum to about 8 dB.
NOISE_KINDS: dict[str, tuple[tuple[float, float], tuple[int, int]]] = {
    "noise": ((0.0, 15.0), (1, 1)),
    "music": ((5.0, 15.0), (1, 1)),
    "speech": ((13.0, 20.0), (3, 7)),
}
# Speed factors of AUGMENT.SPEED_PERTURB; the i-th makes classes i*K .. i*K + K - 1 of K speakers.
SPEEDS = (1.0, 0.9, 1.1)
SHOWN_UNREADABLE = 3


def uniform(low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand(()))


def randint(low: int, high: int) -> int:
    """An integer in [low, high], both included."""
    return int(torch.randint(low, high + 1, ()))


@dataclass(frozen=True)
class AudioFile:
    path: Path
    length: int  # samples at 16 kHz


def scan_audio_folder(folder: Path, what: str) -> list[AudioFile]:
    """The readable audio files under `folder` (searched recursively, sorted), with their lengths.

    Unreadable or empty files are named in the log, counted and skipped; a folder with none readable is an error.
    """
    paths = sorted(path for path in folder.rglob("*") if path.suffix.lower() in voxceleb.AUDIO_SUFFIXES)
    if not paths:
        raise DataError(f"{what} {folder} holds no audio files (.wav, .flac)")
    files, unreadable = [], []
    for path in paths:
        try:
            files.append(AudioFile(path, audio.audio_length(path)))
        except AudioError as error:
            unreadable.append(str(error))
    if unreadable:
        shown = "; ".join(unreadable[:SHOWN_UNREADABLE]) + ("; ..." if len(unreadable) > SHOWN_UNREADABLE else "")
        if not files:
            raise DataError(f"{what} {folder}: none of its {len(paths)} audio files can be read ({shown})")
        get_logger().warning(f"{what} {folder}: {len(unreadable)} of {len(paths)} audio files cannot be read and "
                             f"are skipped: {shown}")
    return files


def read_random_span(file: AudioFile, n_samples: int) -> np.ndarray:
    """`n_samples` from a random place in `file`; a shorter file is repeated end to end."""
    if file.length > n_samples:
        return audio.read_span(file.path, randint(0, file.length - n_samples), n_samples)
    return tile(audio.read_span(file.path, 0, file.length), n_samples)


def tile(samples: np.ndarray, n_samples: int) -> np.ndarray:
    """`samples` repeated end to end until `n_samples` long."""
    if len(samples) == 0:
        return np.zeros(n_samples, dtype=np.float32)
    return np.tile(samples, -(-n_samples // len(samples)))[:n_samples]


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """speech + noise scaled so that the speech-to-noise power ratio is `snr_db`; silent noise adds nothing."""
    return mix_at_snrs(speech, [noise], [snr_db])


def mix_at_snrs(speech: np.ndarray, noises: Sequence[np.ndarray], snrs_db: Sequence[float]) -> np.ndarray:
    """speech + each noise scaled so that its own power ratio to the speech is its SNR; silent noise adds nothing."""
    speech_power = float(np.mean(np.square(speech, dtype=np.float64)))
    if speech_power == 0.0:
        return speech
    mixed = speech.astype(np.float64)
    for noise, snr_db in zip(noises, snrs_db):
        noise_power = float(np.mean(np.square(noise, dtype=np.float64)))
        if noise_power > 0.0:
            mixed = mixed + np.sqrt(speech_power / (noise_power * 10.0 ** (snr_db / 10.0))) * noise
    return mixed.astype(np.float32)


@dataclass(frozen=True)
class NoiseDraw:
    kind: str
    noises: tuple[np.ndarray, ...]
    snrs_db: tuple[float, ...]


class AdditiveNoise:
    """Noise, music or babble from a folder in MUSAN's layout (noise/, music/, speech/), each kind equally likely
    among those present, at an SNR drawn uniformly from the kind's range; babble sums 3-7 different speech files
    (drawn without replacement; at most as many as the folder holds), each at its own SNR."""

    def __init__(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"AUGMENT.NOISE_DIR {folder} does not exist or is not a folder")
        present = [kind for kind in NOISE_KINDS if (folder / kind).is_dir()]
        if not present:
            raise DataError(f"AUGMENT.NOISE_DIR {folder} has none of the sub-folders "
                            f"{', '.join(f'{kind}/' for kind in NOISE_KINDS)} (MUSAN's layout)")
        self.files = {kind: scan_audio_folder(folder / kind, "AUGMENT.NOISE_DIR") for kind in present}
        self.kinds = list(self.files)

    def draw(self, n_samples: int) -> NoiseDraw:
        kind = self.kinds[randint(0, len(self.kinds) - 1)]
        (low_snr, high_snr), (fewest, most) = NOISE_KINDS[kind]
        files = self.files[kind]
        count = min(randint(fewest, most), len(files))
        chosen = torch.randperm(len(files))[:count].tolist()
        noises = tuple(read_random_span(files[index], n_samples) for index in chosen)
        return NoiseDraw(kind, noises, tuple(uniform(low_snr, high_snr) for _ in chosen))

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        draw = self.draw(len(samples))
        return mix_at_snrs(samples, draw.noises, draw.snrs_db)


def reverberate(samples: np.ndarray, rir: np.ndarray) -> np.ndarray:
    """`samples` convolved with `rir` scaled to unit energy, aligned on the RIR's direct path (its largest
    sample) and cut to the input's length: a delta RIR returns the input."""
    energy = float(np.sum(np.square(rir, dtype=np.float64)))
    if energy == 0.0:
        return samples
    rir = rir / np.sqrt(energy)
    direct = int(np.argmax(np.abs(rir)))
    from scipy import signal  # here, not at the top: it adds a second to the start of every script

    return signal.fftconvolve(samples, rir)[direct : direct + len(samples)].astype(np.float32)


class Reverberation:
    """Convolution with a room impulse response drawn from a folder of RIR wavs (searched recursively)."""

    def __init__(self, folder: str | os.PathLike) -> None:
        folder = Path(folder)
        if not folder.is_dir():
            raise DataError(f"AUGMENT.RIR_DIR {folder} does not exist or is not a folder")
        self.files = scan_audio_folder(folder, "AUGMENT.RIR_DIR")

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        file = self.files[randint(0, len(self.files) - 1)]
        return reverberate(samples, audio.read_span(file.path, 0, file.length))


def change_speed(samples: np.ndarray, speed: float) -> np.ndarray:
    """Play `samples` `speed` times faster (tempo and pitch, as sox's `speed`): len / speed samples."""
    if speed == 1.0:
        return samples
    ratio = Fraction(speed).limit_denominator(100)
    from scipy import signal  # as in reverberate

    return signal.resample_poly(samples, ratio.denominator, ratio.numerator).astype(np.float32)


class WaveformAugmentation:
    """`independent`: reverberation, then additive noise (as the anchors' recipes order them), each with its own
    probability."""

    def __init__(self, steps: Sequence[tuple[float, Callable[[np.ndarray], np.ndarray]]]) -> None:
        self.steps = list(steps)

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        for probability, transform in self.steps:
            if float(torch.rand(())) < probability:
                samples = transform(samples)
        return samples


class OneOfAugmentation(WaveformAugmentation):
    """`one_of`: one draw picks at most one step, each with its probability (they sum to at most 1)."""

    def __call__(self, samples: np.ndarray) -> np.ndarray:
        draw = float(torch.rand(()))
        for probability, transform in self.steps:
            if draw < probability:
                return transform(samples)
            draw -= probability
        return samples


AUGMENT_MODES: dict[str, type[WaveformAugmentation]] = {
    "independent": WaveformAugmentation,
    "one_of": OneOfAugmentation,
}


class SpecAugment:
    """With probability `probability`, one time mask of 0..time_width frames and one frequency mask of
    0..freq_width bins, each at a uniform position, set to 0 (the mean of normalised features)."""

    def __init__(self, probability: float, time_width: int, freq_width: int) -> None:
        self.probability, self.time_width, self.freq_width = probability, time_width, freq_width

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if float(torch.rand(())) >= self.probability:
            return features
        features = features.clone()
        for axis, widest in ((0, self.time_width), (1, self.freq_width)):
            size = features.shape[axis]
            width = randint(0, min(widest, size))
            start = randint(0, size - width)
            features.narrow(axis, start, width).zero_()
        return features


def check_augment_config(cfg: CfgNode) -> None:
    """AUGMENT.* values that no run can use, reported before anything is read."""
    augment = cfg.AUGMENT
    for probability, folder, what in (("NOISE_PROB", "NOISE_DIR", "a folder in MUSAN's layout"),
                                      ("RIR_PROB", "RIR_DIR", "a folder of room impulse responses")):
        if augment[probability] > 0.0 and not augment[folder]:
            raise ConfigError(f"AUGMENT.{probability} {augment[probability]} needs AUGMENT.{folder} ({what})")
    on_waveforms = [f"AUGMENT.{key}" for key in ("NOISE_PROB", "RIR_PROB") if augment[key] > 0.0]
    on_waveforms += ["AUGMENT.SPEED_PERTURB"] if augment.SPEED_PERTURB else []
    if augment.MODE == "one_of" and augment.NOISE_PROB + augment.RIR_PROB > 1.0:
        raise ConfigError(f"AUGMENT.MODE one_of applies one of noise and reverberation: AUGMENT.NOISE_PROB + "
                          f"AUGMENT.RIR_PROB must be at most 1, got {augment.NOISE_PROB + augment.RIR_PROB:g}")
    if on_waveforms and cfg.DATASET.FEATURES == "spectrogram":
        raise ConfigError(f"{', '.join(on_waveforms)} need waveforms: set DATASET.FEATURES fbank (the spectrogram "
                          f"recipe reads precomputed features and takes AUGMENT.SPECAUGMENT_PROB only)")


def build_waveform_augmentation(cfg: CfgNode) -> WaveformAugmentation | None:
    """The configured reverberation and noise; a folder that is set is checked even when its probability is 0."""
    augment = cfg.AUGMENT
    reverberation = Reverberation(augment.RIR_DIR) if augment.RIR_DIR else None
    noise = AdditiveNoise(augment.NOISE_DIR) if augment.NOISE_DIR else None
    steps = [(probability, transform) for probability, transform in
             ((augment.RIR_PROB, reverberation), (augment.NOISE_PROB, noise)) if transform and probability > 0.0]
    return AUGMENT_MODES[augment.MODE](steps) if steps else None


def build_spec_augment(cfg: CfgNode) -> SpecAugment | None:
    augment = cfg.AUGMENT
    if augment.SPECAUGMENT_PROB == 0.0:
        return None
    return SpecAugment(augment.SPECAUGMENT_PROB, augment.TIME_MASK_WIDTH, augment.FREQ_MASK_WIDTH)


def speeds(cfg: CfgNode) -> tuple[float, ...]:
    """The speeds of training items: (1.0,) or, with AUGMENT.SPEED_PERTURB, SPEEDS."""
    return SPEEDS if cfg.AUGMENT.SPEED_PERTURB else (1.0,)
