"""What every network puts after its convolutional trunk: pooling, an optional embedding layer, the classifier.

The published head is global average pooling and a linear classifier, the pooled vector being the embedding.
`HeadSpec` names the other choices (MODEL.POOLING, MODEL.EMBEDDING_DIM, the classifier LOSS.NAME trains) and the
feature dimension of the input, from which the statistics poolings take the frequency bins of the last map.
The published head (avg, 0, softmax) adds no module and no parameter: its state_dict is the published one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from yacs.config import CfgNode

from models.frontends import N_BINS as SPECTROGRAM_BINS
from models.losses import build_classifier
from models.pooling import build_pooling


def halved(bins: int, times: int) -> int:
    """Bins left after `times` stride-2 layers padded to keep ceil(bins / 2)."""
    for _ in range(times):
        bins = math.ceil(bins / 2)
    return bins


def feature_dimension(cfg: CfgNode) -> int:
    """Frequency bins of the network input: 257 for the spectrogram, DATASET.N_MELS for the filterbanks."""
    return SPECTROGRAM_BINS if cfg.DATASET.FEATURES == "spectrogram" else cfg.DATASET.N_MELS


@dataclass(frozen=True)
class HeadSpec:
    pooling: str = "avg"
    embedding_dim: int = 0
    loss: str = "softmax"
    n_features: int = SPECTROGRAM_BINS

    @classmethod
    def from_config(cls, cfg: CfgNode) -> "HeadSpec":
        return cls(cfg.MODEL.POOLING, cfg.MODEL.EMBEDDING_DIM, cfg.LOSS.NAME, feature_dimension(cfg))


class SpeakerHead:
    """Mixin of the networks: they define `feature_map(x)` ([B, T, F] -> [B, C, T', F']) and `last_map_bins(F)`
    (F', from the strides of the trunk), and call `attach_head` once the trunk is built.

    train mode: `forward(x)` gives the classifier's outputs; eval mode: the embedding (`forward_classifier` gives
    the classifier's outputs from it).
    """

    def attach_head(self, channels: int, num_classes: int, head: HeadSpec) -> None:
        self.global_pooling = build_pooling(head.pooling, channels, self.last_map_bins(head.n_features))
        pooled = self.global_pooling.output_size
        if head.embedding_dim > 0:
            self.embedding = nn.Sequential(nn.Linear(pooled, head.embedding_dim), nn.BatchNorm1d(head.embedding_dim))
            self.embedding_size = head.embedding_dim
        else:
            self.embedding = None
            self.embedding_size = pooled
        self.classifier = build_classifier(head.loss, self.embedding_size, num_classes)

    def embed(self, feature_map: torch.Tensor) -> torch.Tensor:
        pooled = self.global_pooling(feature_map)
        return pooled if self.embedding is None else self.embedding(pooled)

    def forward(self, x: torch.Tensor, *args) -> torch.Tensor:
        embedding = self.embed(self.feature_map(x, *args))
        return self.classifier(embedding) if self.training else embedding

    def forward_classifier(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.classifier(embedding)
