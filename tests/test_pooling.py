"""Poolings against their definitions, and every network under every head and feature size."""
from __future__ import annotations

import pytest
import torch

from models import AUTOSPEECH, build_model
from models.pooling import AttentiveStatisticsPooling, ChannelAttentiveStatisticsPooling, build_pooling
from utils.config import get_default_config

FEATURE_MAP = torch.randn(2, 3, 7, 5)  # [B, C, T, F]


def reference_statistics(feature_map: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted mean and standard deviation over time of every (channel, bin), channel-major."""
    w = weights.view(feature_map.size(0), 1, -1, 1)
    mean = (feature_map * w).sum(2)
    std = ((feature_map - mean.unsqueeze(2)).square() * w).sum(2).sqrt()
    return torch.cat([mean.flatten(1), std.flatten(1)], dim=1)


def test_avg_pooling_is_the_mean_over_time_and_frequency() -> None:
    pooling = build_pooling("avg", 3, 5)
    torch.testing.assert_close(pooling(FEATURE_MAP), FEATURE_MAP.mean(dim=(2, 3)))
    assert pooling.output_size == 3 and not list(pooling.parameters())


def test_stats_pooling_is_mean_and_std_over_time_of_channels_by_bins() -> None:
    pooling = build_pooling("stats", 3, 5)
    expected = torch.cat([FEATURE_MAP.mean(2).flatten(1), FEATURE_MAP.std(2, unbiased=False).flatten(1)], 1)
    torch.testing.assert_close(pooling(FEATURE_MAP), expected, atol=1e-5, rtol=1e-5)
    assert pooling.output_size == 2 * 3 * 5


def test_attentive_pooling_weights_frames_by_the_softmax_of_its_scores() -> None:
    pooling = AttentiveStatisticsPooling(3, 5, bottleneck=4)
    frames = FEATURE_MAP.permute(0, 1, 3, 2).reshape(2, 15, 7)
    weights = pooling.attention(frames).softmax(dim=2).squeeze(1)
    torch.testing.assert_close(pooling(FEATURE_MAP), reference_statistics(FEATURE_MAP, weights),
                               atol=1e-5, rtol=1e-5)
    assert not torch.allclose(weights, torch.full_like(weights, 1 / 7))


def test_attentive_pooling_with_constant_scores_is_stats_pooling() -> None:
    pooling = AttentiveStatisticsPooling(3, 5, bottleneck=4)
    torch.nn.init.zeros_(pooling.attention[2].weight)
    torch.testing.assert_close(pooling(FEATURE_MAP), build_pooling("stats", 3, 5)(FEATURE_MAP),
                               atol=1e-5, rtol=1e-5)


def test_astp_weights_each_channel_by_its_own_softmax_over_time() -> None:
    pooling = ChannelAttentiveStatisticsPooling(3, 5, bottleneck=4)
    frames = FEATURE_MAP.permute(0, 1, 3, 2).reshape(2, 15, 7)
    weights = pooling.attention(frames).softmax(dim=2)  # [B, C * F, T]
    assert weights.shape == (2, 15, 7)
    mean = (frames * weights).sum(2)
    std = ((frames - mean.unsqueeze(2)).square() * weights).sum(2).sqrt()
    torch.testing.assert_close(pooling(FEATURE_MAP), torch.cat([mean, std], 1), atol=1e-5, rtol=1e-5)
    # Channels attend differently, unlike the frame-wise 'attentive' pooling.
    assert not torch.allclose(weights[:, 0], weights[:, 1])
    torch.nn.init.zeros_(pooling.attention[2].weight)
    torch.nn.init.zeros_(pooling.attention[2].bias)
    torch.testing.assert_close(pooling(FEATURE_MAP), build_pooling("stats", 3, 5)(FEATURE_MAP), atol=1e-5, rtol=1e-5)


def test_unknown_pooling_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="avg, stats, attentive, astp"):
        build_pooling("max", 3, 5)


def config(name: str, pooling: str, embedding: int, loss: str, features: str, n_mels: int = 40):
    cfg = get_default_config()
    cfg.MODEL.NAME, cfg.MODEL.POOLING, cfg.MODEL.EMBEDDING_DIM, cfg.LOSS.NAME = name, pooling, embedding, loss
    cfg.MODEL.INIT_CHANNELS, cfg.MODEL.LAYERS = 4, 3
    cfg.DATASET.FEATURES, cfg.DATASET.N_MELS = features, n_mels
    # Single-path search runs one operation per edge: the same head, a fraction of the time.
    cfg.MODEL.SINGLE_PATH = True
    return cfg


@pytest.mark.parametrize("name,pooling,embedding,loss,features", [
    ("model", "attentive", 0, "am", "spectrogram"), ("model_search", "stats", 16, "aam", "fbank"),
    ("resnet18", "avg", 8, "softmax", "fbank"), ("resnet18", "stats", 0, "aam", "fbank"),
])
def test_every_network_takes_every_head_and_feature_size(name, pooling, embedding, loss, features) -> None:
    cfg = config(name, pooling, embedding, loss, features)
    bins = 40 if features == "fbank" else 257
    model = build_model(cfg, 5, AUTOSPEECH if name == "model" else None)
    x = torch.randn(3, 32, bins)
    outputs = model(x)
    assert outputs.shape == (3, 5)
    if loss != "softmax":  # a cosine classifier
        assert outputs.abs().max() <= 1.0 + 1e-6
    outputs.sum().backward()
    assert model.classifier.weight.grad is not None and model.global_pooling is not None
    model.eval()
    embedding_size = model(x).shape[1]
    assert embedding_size == model.embedding_size
    assert embedding_size == (embedding or model.global_pooling.output_size)
    assert model.forward_classifier(model(x)).shape == (3, 5)


def test_statistics_head_sees_the_frequency_bins_of_the_last_map() -> None:
    model = build_model(config("resnet18", "stats", 0, "softmax", "fbank", n_mels=80), 5)
    # 80 bins: conv1 (k7, s2, p2) -> 39, max pool -> 20, three stride-2 stages -> 3; 512 channels.
    assert model.embedding_size == 2 * 512 * 3


@pytest.mark.parametrize("name,layers", [("model", 3), ("model", 1), ("model_search", 2), ("resnet18", 3)])
def test_last_map_bins_is_the_frequency_size_of_the_feature_map(name: str, layers: int) -> None:
    cfg = config(name, "avg", 0, "softmax", "fbank")
    cfg.MODEL.LAYERS = layers
    model = build_model(cfg, 5, AUTOSPEECH if name == "model" else None).eval()
    with torch.no_grad():
        for bins in (80, 41):
            feature_map = model.feature_map(torch.zeros(1, 32, bins), *([model.sample_cell_weights()]
                                                                     if name == "model_search" else []))
            assert feature_map.size(3) == model.last_map_bins(bins), bins
