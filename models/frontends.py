"""Front-ends: a 16 kHz waveform batch [B, samples] -> features [B, T, F], T = 1 + samples // 160.

Everything a feature needs is inside the module (the DFT basis, the window, the mel matrix, the normalisation
statistics are buffers), so a network exported together with its front-end takes raw samples and needs no numpy
pre-processing. The STFT is a strided convolution with a windowed DFT basis rather than `torch.stft`: the same
numbers to float32 precision, and a graph of plain convolutions that torch.jit and ONNX export as they are.

`FRONTENDS` maps DATASET.FEATURES to the class; `build_frontend` builds the configured one.
"""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from models.kaldi_fbank import KaldiFbankFrontend, refuse_empty_bands
from utils.config import ConfigError
from utils.feature_constants import HOP_LENGTH, N_BINS, N_FFT, SAMPLE_RATE, TARGET_DBFS, WIN_LENGTH

# Floor of the log-mel energies of waveforms scaled to [-1, 1]: 120 dB below full scale, under the noise floor of
# any recording (a quiet one is not clipped) and above the float32 round-off of the STFT.
LOG_FLOOR = 1e-12


def frame_count(n_samples: int) -> int:
    """Frames of a centred STFT with hop 160: 1 + samples // 160."""
    return 1 + n_samples // HOP_LENGTH


def samples_for_frames(n_frames: int) -> int:
    """The fewest samples whose centred STFT has `n_frames` frames."""
    return (n_frames - 1) * HOP_LENGTH


class ShortTimeFourier(nn.Module):
    """Centred STFT (n_fft 512, hop 160, a 400-sample window centred in each 512-sample frame, reflection padding
    of 256 at both ends): [B, samples] -> real and imaginary parts, each [B, 257, T].

    Only the 400 windowed samples of a frame enter the convolution; starting the DFT at the window instead of the
    frame shifts every bin's phase, never its magnitude.
    """

    def __init__(self, window: torch.Tensor) -> None:
        super().__init__()
        if window.numel() != WIN_LENGTH:
            raise ValueError(f"the window must have {WIN_LENGTH} samples, got {window.numel()}")
        angles = 2.0 * math.pi * torch.outer(torch.arange(N_BINS, dtype=torch.float64),
                                             torch.arange(WIN_LENGTH, dtype=torch.float64)) / N_FFT
        window = window.to(torch.float64)
        basis = torch.cat([torch.cos(angles) * window, -torch.sin(angles) * window])
        self.register_buffer("basis", basis.to(torch.float32).unsqueeze(1), persistent=False)
        # Attributes, not module globals, so that torch.jit.script sees them as constants.
        self.padding, self.offset = N_FFT // 2, (N_FFT - WIN_LENGTH) // 2
        self.hop_length, self.n_bins = HOP_LENGTH, N_BINS

    def forward(self, waveform: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        padded = nn.functional.pad(waveform.unsqueeze(1), (self.padding, self.padding), mode="reflect")
        # The frames' windows lie `offset` samples inside both ends of the padding: cut the tail too, or the
        # convolution finds room for one more frame whenever samples % hop >= hop - offset.
        spectrum = nn.functional.conv1d(padded[:, :, self.offset : -self.offset], self.basis,
                                        stride=self.hop_length)
        return spectrum[:, : self.n_bins], spectrum[:, self.n_bins :]


class SpectrogramFrontend(nn.Module):
    """The paper's feature (SPEC §2) in torch, normalised: [B, samples] -> [B, T, 257].

    Per utterance, the level is raised to -30 dBFS (rms of the int16-scaled samples; a louder utterance is left
    as it is), then the magnitude STFT with a periodic Hann window of 400 samples, then (x - mean) / std with the
    per-bin statistics of DATA_DIR/mean.npy and std.npy (buffers, saved with the module's state).
    """

    def __init__(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        super().__init__()
        mean, std = torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)
        if mean.shape != (N_BINS,) or std.shape != (N_BINS,):
            raise ValueError(f"mean and std must hold {N_BINS} values, got {tuple(mean.shape)} and {tuple(std.shape)}")
        self.feature_dim = N_BINS
        self.stft = ShortTimeFourier(torch.hann_window(WIN_LENGTH, periodic=True, dtype=torch.float64))
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.target_dbfs = TARGET_DBFS

    @classmethod
    def from_config(cls, cfg: CfgNode, mean: np.ndarray | None = None,
                    std: np.ndarray | None = None) -> "SpectrogramFrontend":
        if mean is None or std is None:
            raise ValueError("the spectrogram front-end needs the mean and std of the features (mean.npy, std.npy)")
        return cls(mean, std)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        rms = waveform.square().mean(dim=1, keepdim=True).sqrt()
        # A silent utterance gets a finite gain and stays silent.
        level = 20.0 * torch.log10(rms.clamp_min(1e-10))
        gain = torch.where(level < self.target_dbfs, torch.pow(10.0, (self.target_dbfs - level) / 20.0),
                           torch.ones_like(level))
        real, imag = self.stft(waveform * gain)
        magnitude = torch.sqrt(real.square() + imag.square()).transpose(1, 2)
        return (magnitude - self.mean) / self.std


def mel_matrix(n_mels: int) -> np.ndarray:
    """librosa's Slaney mel filterbank for a 512-point FFT at 16 kHz, 0-8 kHz: float32 [n_mels, 257]."""
    if n_mels < 1:
        raise ConfigError(f"DATASET.N_MELS must be at least 1, got {n_mels}")
    import librosa  # takes a second to import; only the fbank front-end needs it

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # empty bands are reported below, as a config error
        matrix = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=N_FFT, n_mels=n_mels).astype(np.float32)
    refuse_empty_bands(matrix)
    return matrix


class FbankFrontend(nn.Module):
    """80-bin (n_mels) log-mel filterbank with per-utterance mean normalisation (SPEC §13): [B, samples] -> [B, T, n_mels].

    Power spectrum of the centred 512-point STFT with a periodic Hamming window of 400 samples (25 ms) and a hop
    of 160 (10 ms), librosa's Slaney mel matrix (a buffer), log of the band energies floored at LOG_FLOOR, and
    each band's mean over the utterance's frames subtracted. No volume normalisation: the mean subtraction
    removes any gain.
    """

    def __init__(self, n_mels: int = 80) -> None:
        super().__init__()
        self.feature_dim = n_mels
        self.stft = ShortTimeFourier(torch.hamming_window(WIN_LENGTH, periodic=True, dtype=torch.float64))
        self.register_buffer("mel", torch.from_numpy(mel_matrix(n_mels)), persistent=False)
        self.log_floor = LOG_FLOOR

    @classmethod
    def from_config(cls, cfg: CfgNode, mean: np.ndarray | None = None,
                    std: np.ndarray | None = None) -> "FbankFrontend":
        return cls(cfg.DATASET.N_MELS)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        real, imag = self.stft(waveform)
        power = (real.square() + imag.square()).transpose(1, 2)
        log_mel = torch.log(torch.matmul(power, self.mel.t()).clamp_min(self.log_floor))
        return log_mel - log_mel.mean(dim=1, keepdim=True)


FRONTENDS: dict[str, type[nn.Module]] = {"spectrogram": SpectrogramFrontend, "fbank": FbankFrontend,
                                         "kaldi_fbank": KaldiFbankFrontend}


def check_frontend_name(name: str) -> None:
    if name not in FRONTENDS:
        raise ConfigError(f"unknown DATASET.FEATURES '{name}'; valid names: {', '.join(FRONTENDS)}")


def build_frontend(cfg: CfgNode, mean: np.ndarray | None = None, std: np.ndarray | None = None) -> nn.Module:
    """The front-end named by DATASET.FEATURES; 'spectrogram' needs the per-bin `mean` and `std`."""
    check_frontend_name(cfg.DATASET.FEATURES)
    return FRONTENDS[cfg.DATASET.FEATURES].from_config(cfg, mean, std)
