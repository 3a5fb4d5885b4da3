"""Pooling over time of a network's last feature map [B, C, T, F] into one vector per utterance (MODEL.POOLING).

`avg` is the paper's global average over time and frequency (a vector of C). The statistics poolings keep the
frequency axis: each frame is the C * F values of the map at that time, and the pooled vector is the mean and the
standard deviation of the frames over time (2 * C * F); `attentive` weights the frames by a learned softmax
attention over time before taking the same two statistics, one weight per frame (Okabe et al., 2018); `astp`
gives every channel of a frame its own weight (ECAPA-TDNN's and WeSpeaker's ASTP, voxceleb_trainer's ASP). Statistics are computed in
float32, also under mixed precision: the variance of low-precision activations can round below zero.
"""
from __future__ import annotations

import torch
from torch import nn

# Floor of the variance before its square root: the gradient of sqrt is unbounded at 0.
VARIANCE_FLOOR = 1e-5
ATTENTION_BOTTLENECK = 128


def _frames(feature_map: torch.Tensor) -> torch.Tensor:
    """[B, C, T, F] -> [B, C * F, T]."""
    batch, channels, frames, bins = feature_map.shape
    return feature_map.float().permute(0, 1, 3, 2).reshape(batch, channels * bins, frames)


def _weighted_statistics(frames: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation over time of `frames` [B, D, T] under `weights` [B, 1 or D, T] summing to 1."""
    mean = (frames * weights).sum(dim=2)
    variance = (frames.square() * weights).sum(dim=2) - mean.square()
    return torch.cat([mean, variance.clamp_min(VARIANCE_FLOOR).sqrt()], dim=1)


class AveragePooling(nn.Module):
    """The mean over time and frequency: C values."""

    def __init__(self, channels: int, bins: int) -> None:
        super().__init__()
        self.output_size = channels
        self.average = nn.AdaptiveAvgPool2d(1)

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        return self.average(feature_map).flatten(1)


class StatisticsPooling(nn.Module):
    """Mean and standard deviation over time of the frames: 2 * C * F values."""

    def __init__(self, channels: int, bins: int) -> None:
        super().__init__()
        self.output_size = 2 * channels * bins

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        frames = _frames(feature_map)
        uniform = frames.new_full((1, 1, frames.size(2)), 1.0 / frames.size(2))
        return _weighted_statistics(frames, uniform)


class AttentiveStatisticsPooling(nn.Module):
    """Statistics under a softmax over time of a one-hidden-layer score of each frame: 2 * C * F values."""

    # One score per frame (Okabe et al.); the per-channel form below scores each of the C * F values of a frame.
    per_channel = False

    def __init__(self, channels: int, bins: int, bottleneck: int = ATTENTION_BOTTLENECK) -> None:
        super().__init__()
        self.output_size = 2 * channels * bins
        self.attention = nn.Sequential(
            nn.Conv1d(channels * bins, bottleneck, kernel_size=1),
            nn.Tanh(),
            nn.Conv1d(bottleneck, channels * bins if self.per_channel else 1, kernel_size=1),
        )

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        frames = _frames(feature_map)
        weights = self.attention(frames).float().softmax(dim=2)
        return _weighted_statistics(frames, weights)


class ChannelAttentiveStatisticsPooling(AttentiveStatisticsPooling):
    """Statistics under a softmax over time per channel: a one-hidden-layer score of each frame gives one score
    per channel (C * F), so each channel weights the frames its own way: 2 * C * F values."""

    per_channel = True


POOLINGS: dict[str, type[nn.Module]] = {
    "avg": AveragePooling,
    "stats": StatisticsPooling,
    "attentive": AttentiveStatisticsPooling,
    "astp": ChannelAttentiveStatisticsPooling,
}


def build_pooling(name: str, channels: int, bins: int) -> nn.Module:
    """The pooling `name` for a last feature map of `channels` x `bins` (frequency); it has `output_size`."""
    if name not in POOLINGS:
        raise ValueError(f"unknown MODEL.POOLING {name!r}; known: {', '.join(POOLINGS)}")
    return POOLINGS[name](channels, bins)
