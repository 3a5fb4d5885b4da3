"""Kaldi's fbank (compute-fbank-feats, as kaldi-native-fbank and torchaudio.compliance.kaldi compute it), the
front-end of WeSpeaker, voxceleb_trainer's Kaldi recipes and SpeechBrain's VoxCeleb models (DATASET.FEATURES
kaldi_fbank): a 16 kHz waveform batch [B, samples] in [-1, 1] -> [B, T, n_mels].

Per frame of 400 samples (25 ms) every 160 (10 ms), frames lying wholly inside the signal (snip-edges, so
T = 1 + (samples - 400) // 160): on the int16 scale, dither (Gaussian, standard deviation 1, training only),
the frame's mean removed, pre-emphasis 0.97, Povey's window, a 512-point power spectrum, HTK-mel triangles from
20 Hz to 8 kHz, the log of each band floored at float32's epsilon; then each band's mean over the utterance
subtracted (WeSpeaker's CMN). The four linear steps make one [514, 400] matrix, applied as a strided convolution
(a buffer), so torch.jit and ONNX export the module as they are; dither adds that matrix times the noise.

Dither is drawn from torch's generator, which the training loader seeds per item, only while the module is in
training mode; evaluation and export (eval mode) have none.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn
from yacs.config import CfgNode

from utils.feature_constants import HOP_LENGTH, N_BINS, N_FFT, SAMPLE_RATE, WIN_LENGTH
from utils.config import ConfigError

INT16_SCALE = 32768.0
# Kaldi's defaults as WeSpeaker sets them (dither 1.0 in training, 0 in evaluation).
DITHER = 1.0
PREEMPHASIS = 0.97
POVEY_EXPONENT = 0.85
LOW_FREQUENCY = 20.0
LOG_FLOOR = float(np.finfo(np.float32).eps)


def snip_edges_frames(n_samples: int) -> int:
    """Frames of Kaldi's snip-edges framing: those 400-sample frames every 160 that lie inside the signal."""
    return 0 if n_samples < WIN_LENGTH else 1 + (n_samples - WIN_LENGTH) // HOP_LENGTH


def frame_transform() -> np.ndarray:
    """[2 * 257, 400] float64: the real and imaginary DFT rows of a frame after mean removal, pre-emphasis and
    Povey's window."""
    n = np.arange(WIN_LENGTH)
    mean_removal = np.eye(WIN_LENGTH) - 1.0 / WIN_LENGTH
    # Kaldi: x[i] -= 0.97 x[i - 1] for i > 0, and x[0] -= 0.97 x[0].
    preemphasis = np.eye(WIN_LENGTH) - PREEMPHASIS * np.eye(WIN_LENGTH, k=-1)
    preemphasis[0, 0] = 1.0 - PREEMPHASIS
    window = (0.5 - 0.5 * np.cos(2.0 * math.pi * n / (WIN_LENGTH - 1))) ** POVEY_EXPONENT
    angles = 2.0 * math.pi * np.outer(np.arange(N_BINS), n) / N_FFT
    dft = np.concatenate([np.cos(angles), -np.sin(angles)])
    return dft @ np.diag(window) @ preemphasis @ mean_removal


def htk_mel(frequency: np.ndarray | float) -> np.ndarray | float:
    return 1127.0 * np.log(1.0 + np.asarray(frequency) / 700.0)


def refuse_empty_bands(matrix: np.ndarray) -> None:
    """A mel filterbank [n_mels, bins] with a band that holds no frequency bin is a config error."""
    empty = int((matrix.max(axis=1) == 0).sum())
    if empty:
        raise ConfigError(f"DATASET.N_MELS {len(matrix)} is too many for a {N_FFT}-point FFT: {empty} mel bands "
                          f"would hold no frequency bin")


def kaldi_mel_matrix(n_mels: int) -> np.ndarray:
    """Kaldi's mel banks [n_mels, 257]: triangles equally spaced on the HTK mel scale from 20 Hz to 8 kHz,
    weights taken at the mel of each FFT bin below Nyquist."""
    low, high = htk_mel(LOW_FREQUENCY), htk_mel(SAMPLE_RATE / 2)
    step = (high - low) / (n_mels + 1)
    bin_mels = htk_mel(np.arange(N_FFT // 2) * SAMPLE_RATE / N_FFT)
    matrix = np.zeros((n_mels, N_BINS))
    for band in range(n_mels):
        left, centre, right = low + band * step, low + (band + 1) * step, low + (band + 2) * step
        rising = (bin_mels - left) / (centre - left)
        falling = (right - bin_mels) / (right - centre)
        inside = (bin_mels > left) & (bin_mels < right)
        matrix[band, : N_FFT // 2] = np.where(inside, np.where(bin_mels <= centre, rising, falling), 0.0)
    refuse_empty_bands(matrix)
    return matrix


class KaldiFbankFrontend(nn.Module):
    """Kaldi-compatible log-mel filterbank with per-utterance mean normalisation: [B, samples] -> [B, T, n_mels],
    T = 1 + (samples - 400) // 160."""

    # Samples of the shortest input: one frame.
    shortest_input = WIN_LENGTH

    def __init__(self, n_mels: int = 80, dither: float = DITHER) -> None:
        super().__init__()
        self.feature_dim = n_mels
        transform = torch.from_numpy(frame_transform())
        self.register_buffer("transform", transform.to(torch.float32).unsqueeze(1), persistent=False)
        self.register_buffer("mel", torch.from_numpy(kaldi_mel_matrix(n_mels)).to(torch.float32), persistent=False)
        self.dither, self.hop_length, self.n_bins = dither, HOP_LENGTH, N_BINS
        self.int16_scale, self.log_floor = INT16_SCALE, LOG_FLOOR

    @classmethod
    def from_config(cls, cfg: CfgNode, mean: np.ndarray | None = None,
                    std: np.ndarray | None = None) -> "KaldiFbankFrontend":
        return cls(cfg.DATASET.N_MELS)

    def log_energies(self, waveform: torch.Tensor) -> torch.Tensor:
        """Kaldi's log mel energies of the int16-scaled waveform, before mean normalisation: [B, T, n_mels]."""
        spectrum = nn.functional.conv1d(waveform.unsqueeze(1) * self.int16_scale, self.transform,
                                        stride=self.hop_length)
        if self.training and self.dither > 0.0:
            noise = torch.randn(spectrum.size(0), self.transform.size(2), spectrum.size(2), device=spectrum.device)
            spectrum = spectrum + torch.matmul(self.transform.squeeze(1), noise * self.dither)
        real, imag = spectrum[:, : self.n_bins], spectrum[:, self.n_bins :]
        power = (real.square() + imag.square()).transpose(1, 2)
        return torch.log(torch.matmul(power, self.mel.t()).clamp_min(self.log_floor))

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        log_mel = self.log_energies(waveform)
        return log_mel - log_mel.mean(dim=1, keepdim=True)
