"""Waveform -> magnitude spectrogram, as the paper's features (SPEC §2).

`compute_features` handles one file; `load_waveform` + `spectrograms` let a caller read several files and
transform them in one batched FFT (same numbers as one at a time).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from math import gcd
from typing import Sequence

import numpy as np
import soundfile
import torch

from data_objects.errors import AudioError
# Also the data layer's own home of the feature's facts: its modules and the benchmarks import them from here.
from utils.feature_constants import HOP_LENGTH, N_BINS, N_FFT, SAMPLE_RATE, TARGET_DBFS, WIN_LENGTH

INT16_MAX = 2**15 - 1
# The published features came from librosa 0.7, whose stft padded by reflection (librosa >= 0.10 pads with zeros,
# 'constant'); the two differ only in the first and last two frames.
PAD_MODE = "reflect"
PAD_MODES = ("reflect", "constant")

VAD_WINDOW_MS = 30
VAD_SMOOTHING_WINDOWS = 8
VAD_MAX_SILENCE_WINDOWS = 6
VAD_AGGRESSIVENESS = 3


@dataclass(frozen=True)
class Waveform:
    """Mono float32 samples at SAMPLE_RATE, with what the file was before conversion."""

    samples: np.ndarray
    source_rate: int
    source_channels: int
    first_channel_only: bool = False

    @property
    def conversions(self) -> tuple[str, ...]:
        done = []
        if self.source_channels > 1:
            done.append(f"took the first of {self.source_channels} channels" if self.first_channel_only
                        else f"mixed {self.source_channels} channels to mono")
        if self.source_rate != SAMPLE_RATE:
            done.append(f"resampled from {self.source_rate} Hz")
        return tuple(done)


def load_waveform(path: str | os.PathLike, first_channel_only: bool = False) -> Waveform:
    """Read a wav/flac file as mono float32 at 16 kHz: the mean of its channels, or its first channel."""
    try:
        samples, rate = soundfile.read(os.fspath(path), dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        if os.path.isfile(path) and os.path.getsize(path) == 0:
            raise AudioError("empty", f"{path}: empty file (0 bytes)") from None
        raise AudioError("unreadable", f"{path}: unreadable audio ({str(error).splitlines()[0]})") from None
    channels = samples.shape[1]
    if samples.shape[0] == 0:
        raise AudioError("empty", f"{path}: no audio samples")
    mono = samples[:, 0] if channels == 1 or first_channel_only else samples.mean(axis=1, dtype=np.float32)
    if not np.isfinite(mono).all():
        raise AudioError("unreadable", f"{path}: audio contains NaN or infinite samples")
    return Waveform(np.ascontiguousarray(resample(mono, rate)), rate, channels, first_channel_only)


def resample(mono: np.ndarray, rate: int) -> np.ndarray:
    """float32 samples at `rate` Hz -> at SAMPLE_RATE (polyphase filtering; returned as they are at 16 kHz)."""
    if rate == SAMPLE_RATE or not len(mono):
        return mono
    from scipy.signal import resample_poly  # scipy.signal takes half a second to import; most files need no resampling

    common = gcd(SAMPLE_RATE, rate)
    return resample_poly(mono, SAMPLE_RATE // common, rate // common).astype(np.float32)


def check_not_silent(samples: np.ndarray, path: object = "audio") -> None:
    """Raise the 'silent' AudioError for samples that are all zero: nothing to normalise, no speaker in them."""
    if not np.any(samples):
        raise AudioError("silent", f"{path}: audio is entirely silent")


def normalize_volume(samples: np.ndarray, target_dbfs: float = TARGET_DBFS, path: object = "audio") -> np.ndarray:
    """Raise the level to `target_dbfs` (rms of int16-scaled samples); never lower a louder waveform."""
    check_not_silent(samples, path)
    rms = np.sqrt(np.mean(np.square(samples, dtype=np.float64))) * INT16_MAX
    level = 20.0 * np.log10(rms / INT16_MAX)
    if level >= target_dbfs:
        return samples
    return samples * np.float32(10.0 ** ((target_dbfs - level) / 20.0))


class _CompiledVad:
    """webrtcvad.Vad's interface over the compiled module alone."""

    def __init__(self, module, mode: int) -> None:
        self._module = module
        self._state = module.create()
        module.init(self._state)
        module.set_mode(self._state, mode)

    def is_speech(self, buffer: bytes, sample_rate: int) -> bool:
        return self._module.process(self._state, sample_rate, buffer, len(buffer) // 2)


def _voice_activity_detector(mode: int):
    try:
        import webrtcvad
    except ModuleNotFoundError as error:
        # webrtcvad's wrapper imports pkg_resources only for its version string, and setuptools >= 81 no
        # longer ships pkg_resources; the detector itself is the compiled _webrtcvad module.
        if error.name != "pkg_resources":
            raise
        import _webrtcvad

        return _CompiledVad(_webrtcvad, mode)
    return webrtcvad.Vad(mode)


def trim_silence(samples: np.ndarray, path: object = "audio") -> np.ndarray:
    """Drop long silences with webrtcvad: 30 ms decisions, smoothed over 8 windows, kept 6 windows around speech."""
    window = SAMPLE_RATE * VAD_WINDOW_MS // 1000
    n_windows = len(samples) // window
    if n_windows == 0:
        return samples
    samples = samples[: n_windows * window]
    pcm = np.round(np.clip(samples, -1.0, 1.0) * INT16_MAX).astype("<i2")
    detector = _voice_activity_detector(VAD_AGGRESSIVENESS)
    voiced = np.array(
        [detector.is_speech(pcm[i * window : (i + 1) * window].tobytes(), SAMPLE_RATE) for i in range(n_windows)],
        dtype=np.float64,
    )
    smoothed = np.convolve(voiced, np.ones(VAD_SMOOTHING_WINDOWS) / VAD_SMOOTHING_WINDOWS, mode="same") > 0.5
    reach = np.ones(2 * VAD_MAX_SILENCE_WINDOWS + 1)
    keep = np.convolve(smoothed.astype(np.float64), reach, mode="same") > 0
    if not keep.any():
        raise AudioError("no speech", f"{path}: no speech found by voice activity detection")
    return samples[np.repeat(keep, window)]


def frame_count(n_samples: int) -> int:
    """Frames of a centred STFT: 1 + len // hop."""
    return 1 + n_samples // HOP_LENGTH


def _frame_view(samples: np.ndarray, pad_mode: str) -> np.ndarray:
    """The frames of a centred STFT as a read-only view [frames, WIN_LENGTH] of the padded samples.

    Centring pads n_fft/2 on both sides; only the middle WIN_LENGTH samples of each n_fft frame meet a non-zero
    window, and dropping the zero margins only shifts the frame in time, which leaves the magnitude unchanged.
    """
    padded = np.pad(samples, N_FFT // 2, mode=pad_mode)
    offset = (N_FFT - WIN_LENGTH) // 2
    span = HOP_LENGTH * (frame_count(len(samples)) - 1) + WIN_LENGTH
    return np.lib.stride_tricks.sliding_window_view(padded[offset : offset + span], WIN_LENGTH)[::HOP_LENGTH]


_HANN = torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float32).numpy()


def spectrograms(waveforms: Sequence[np.ndarray], pad_mode: str = PAD_MODE) -> list[np.ndarray]:
    """Magnitude STFTs (n_fft 512, hop 160, Hann 400, centred) of several waveforms in one FFT: float32 [T, 257] each."""
    for samples in waveforms:
        check_length(samples)
    views = [_frame_view(np.asarray(w, dtype=np.float32), pad_mode) for w in waveforms]
    # Frames are zero-padded to n_fft in the buffer: a power-of-two FFT runs faster than one that pads internally.
    # np.zeros takes pages the kernel has already zeroed, and numpy windows a strided view faster than torch.
    frames = np.zeros((sum(len(v) for v in views), N_FFT), dtype=np.float32)
    start = 0
    for view in views:
        np.multiply(view, _HANN, out=frames[start : start + len(view), :WIN_LENGTH])
        start += len(view)
    # numpy's complex abs is several times faster than torch's on CPU
    magnitude = np.abs(torch.fft.rfft(torch.from_numpy(frames), dim=1).numpy())
    bounds = np.cumsum([len(v) for v in views])[:-1]
    return np.split(magnitude, bounds)


def spectrogram(samples: np.ndarray, pad_mode: str = PAD_MODE) -> np.ndarray:
    """Magnitude STFT of one waveform: float32 [1 + len // 160, 257]."""
    return spectrograms([samples], pad_mode=pad_mode)[0]


def prepare_waveform(path: str | os.PathLike, vad: bool = False) -> Waveform:
    """Load, normalise the volume and optionally trim silences: the samples a feature is computed from."""
    waveform = load_waveform(path)
    samples = normalize_volume(waveform.samples, path=path)
    if vad:
        samples = trim_silence(samples, path=path)
    return Waveform(samples, waveform.source_rate, waveform.source_channels)


def check_length(samples: np.ndarray, min_frames: int = 0, path: object = "audio") -> None:
    """Raise the 'too short' AudioError for fewer than `min_frames` frames or too few samples for an STFT."""
    frames = frame_count(len(samples))
    if frames < min_frames:
        raise AudioError("too short", f"{path}: too short ({frames} frames < {min_frames})")
    if len(samples) <= N_FFT // 2:
        raise AudioError("too short", f"{path}: too short for an STFT ({len(samples)} samples)")


def compute_features(
    path: str | os.PathLike, vad: bool = False, min_frames: int = 0, pad_mode: str = PAD_MODE
) -> np.ndarray:
    """The feature of one audio file: float32 [T, 257] magnitude spectrogram of its volume-normalised samples."""
    samples = prepare_waveform(path, vad=vad).samples
    check_length(samples, min_frames, path)
    return spectrogram(samples, pad_mode=pad_mode)


def audio_length(path: str | os.PathLike) -> int:
    """Samples of an audio file at 16 kHz, from its header alone."""
    info = _audio_info(path)
    return info.frames * SAMPLE_RATE // info.samplerate


def _audio_info(path: str | os.PathLike):
    try:
        info = soundfile.info(os.fspath(path))
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError("unreadable", f"{path}: unreadable audio ({str(error).splitlines()[0]})") from None
    if info.frames == 0:
        raise AudioError("empty", f"{path}: no audio samples")
    return info


def read_span(path: str | os.PathLike, start: int, count: int) -> np.ndarray:
    """`count` mono float32 samples at 16 kHz from sample `start` on (fewer at the end of the file), reading only
    the bytes of that span (a seek, then a read of its frames; files at another rate: the same span, resampled)."""
    info = _audio_info(path)
    rate = info.samplerate
    source_start, source_count = start * rate // SAMPLE_RATE, -(-count * rate // SAMPLE_RATE)
    try:
        with soundfile.SoundFile(os.fspath(path)) as handle:
            handle.seek(min(source_start, info.frames))
            samples = handle.read(source_count, dtype="float32", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, OSError) as error:
        raise AudioError("unreadable", f"{path}: unreadable audio ({str(error).splitlines()[0]})") from None
    mono = samples[:, 0] if samples.shape[1] == 1 else samples.mean(axis=1, dtype=np.float32)
    return np.ascontiguousarray(resample(mono, rate)[:count])
