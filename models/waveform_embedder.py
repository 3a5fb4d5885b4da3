"""A network with its front-end and evaluation's windowing: 16 kHz waveforms [B, samples] -> embeddings [B, E].

Each recipe is windowed as its evaluation windows it (data_objects/sources.py): the spectrogram recipe cuts
the features of the whole utterance (data_objects.datasets.sliding_windows: an utterance not longer than a
window has every frame repeated until it is longer), the fbank recipe cuts the samples and puts each window
through the front-end (data_objects.wav_datasets.sliding_sample_windows: a short utterance is repeated end to
end). Windows have `window` frames and a hop of window // 2; the embedding is the mean of the windows'
embeddings. Tiling and window positions are computed with tensor operations from the input's length, without
Python branches or loops, so that a traced module (TorchScript, ONNX) keeps them for every input length.
"""
from __future__ import annotations

import torch
from torch import nn
from yacs.config import CfgNode

from models.frontends import HOP_LENGTH, check_frontend_name, samples_for_frames

# Doublings considered by the tiling: enough for a 1-frame input to outgrow a window of 2**31 frames.
MAX_DOUBLINGS = 32


def _length(values: torch.Tensor) -> torch.Tensor:
    """The length of a 1-d tensor as the result of a tensor operation, so that a traced graph takes it from
    each input rather than from the example it was traced with."""
    return torch.ones_like(values, dtype=torch.int64).sum()


def _tiled_frames(n_frames: torch.Tensor, window: int) -> torch.Tensor:
    """Frames after tiling by doubling: n_frames * 2**k for the least k with more than `window` frames."""
    powers = 2 ** torch.arange(MAX_DOUBLINGS, dtype=torch.int64)
    return n_frames * 2 ** (n_frames * powers <= window).sum()


def _window_starts(frames: torch.Tensor, window: int) -> torch.Tensor:
    return torch.arange(0, frames - window + 1, max(window // 2, 1))


def window_frame_indices(n_frames: torch.Tensor, window: int) -> torch.Tensor:
    """[N, window] indices of the frames of each window of features of `n_frames` frames (a 0-d int64 tensor)."""
    tiled = _tiled_frames(n_frames, window)
    source_frame = torch.arange(tiled) // (tiled // n_frames)
    starts = _window_starts(tiled, window)
    return source_frame[starts.unsqueeze(1) + torch.arange(window).unsqueeze(0)]


def window_sample_indices(n_samples: torch.Tensor, window: int) -> torch.Tensor:
    """[N, samples_for_frames(window)] indices of the samples of each window of a waveform of `n_samples`."""
    tiled = _tiled_frames(1 + n_samples // HOP_LENGTH, window)
    starts = _window_starts(tiled, window) * HOP_LENGTH
    # A tiled waveform repeats end to end: sample i of it is sample i mod n_samples of the utterance.
    return (starts.unsqueeze(1) + torch.arange(samples_for_frames(window)).unsqueeze(0)) % n_samples


class FrameWindows(nn.Module):
    """waveform [B, samples] -> the front-end's features of the whole utterance, cut into [B, N, window, F]."""

    def __init__(self, frontend: nn.Module, window: int) -> None:
        super().__init__()
        self.frontend, self.window = frontend, window

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = self.frontend(waveform)
        return features[:, window_frame_indices(_length(features[0, :, 0]), self.window)]


class SampleWindows(nn.Module):
    """waveform [B, samples] -> windows of samples, each through the front-end: [B, N, window, F]."""

    def __init__(self, frontend: nn.Module, window: int) -> None:
        super().__init__()
        self.frontend, self.window = frontend, window

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        pieces = waveform[:, window_sample_indices(_length(waveform[0]), self.window)]
        features = self.frontend(pieces.flatten(0, 1))
        return features.reshape(pieces.shape[0], pieces.shape[1], features.shape[1], features.shape[2])


# How each DATASET.FEATURES recipe's evaluation windows an utterance.
WINDOWINGS: dict[str, type[nn.Module]] = {"spectrogram": FrameWindows, "fbank": SampleWindows,
                                          "kaldi_fbank": SampleWindows}


def build_windowing(cfg: CfgNode, frontend: nn.Module) -> nn.Module:
    check_frontend_name(cfg.DATASET.FEATURES)
    return WINDOWINGS[cfg.DATASET.FEATURES](frontend, cfg.DATASET.PARTIAL_N_FRAMES)


class WaveformEmbedder(nn.Module):
    """waveform [B, samples] -> windows [B, N, window, F] -> network (eval mode: embeddings) -> mean over each
    utterance's N windows: [B, E]. Every utterance of a batch has the same length, so the same N."""

    def __init__(self, windowing: nn.Module, network: nn.Module) -> None:
        super().__init__()
        self.windowing, self.network = windowing, network

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        windows = self.windowing(waveform)
        embeddings = self.network(windows.flatten(0, 1))
        return embeddings.reshape(windows.shape[0], windows.shape[1], embeddings.shape[1]).mean(dim=1)
