"""A network with its front-end and evaluation's windowing: 16 kHz waveforms [B, samples] -> embeddings [B, E].

The windows are those of evaluation (data_objects.datasets.sliding_windows): an utterance not longer than a
window is first tiled by doubling (every frame repeated) until it is longer; then windows of `window` frames
with a hop of window // 2; the embedding is the mean of the windows' embeddings. The tiling and the window
positions are computed with tensor operations from the feature length, without Python branches or loops, so
that a traced module (TorchScript, ONNX) keeps them for every input length.
"""
from __future__ import annotations

import torch
from torch import nn

# Doublings considered by the tiling: enough for a 1-frame input to outgrow a window of 2**31 frames.
MAX_DOUBLINGS = 32


def window_frame_indices(n_frames: torch.Tensor, window: int) -> torch.Tensor:
    """For features of `n_frames` frames (a 0-d int64 tensor): [N, window] indices of the frames of each window."""
    powers = 2 ** torch.arange(MAX_DOUBLINGS, dtype=torch.int64)
    # The doublings needed for n_frames * 2**k > window; each frame is then repeated `repeats` times.
    repeats = 2 ** (n_frames * powers <= window).sum()
    tiled = n_frames * repeats
    source_frame = torch.arange(tiled) // repeats
    starts = torch.arange(0, tiled - window + 1, max(window // 2, 1))
    return source_frame[starts.unsqueeze(1) + torch.arange(window).unsqueeze(0)]


class WaveformEmbedder(nn.Module):
    """waveform [B, samples] -> front-end features [B, T, F] -> windows [B*N, window, F] -> network (eval
    mode: embeddings) -> mean over each utterance's N windows [B, E]. Every utterance of a batch has the same
    length, so the same N."""

    def __init__(self, frontend: nn.Module, network: nn.Module, window: int) -> None:
        super().__init__()
        self.frontend, self.network, self.window = frontend, network, window

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = self.frontend(waveform)
        # The frame count as the result of a tensor operation, so that a traced graph takes it from each input.
        n_frames = torch.ones_like(features[0, :, 0], dtype=torch.int64).sum()
        windows = features[:, window_frame_indices(n_frames, self.window)]
        embeddings = self.network(windows.flatten(0, 1))
        return embeddings.reshape(waveform.shape[0], -1, embeddings.shape[1]).mean(dim=1)
