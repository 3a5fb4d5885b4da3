"""Networks that keep time resolution: the WeSpeaker-style ResNet-34 and the genotype network's time-keeping stem."""
from __future__ import annotations

import argparse

import pytest
import torch

from functions.experiment import count_parameters, load_config
from functions.recipe import check_recipe
from models import AUTOSPEECH, build_model
from utils.checkpoint import CheckpointError
from utils.config import ConfigError, get_default_config


def config(name: str, **model):
    cfg = get_default_config()
    cfg.MODEL.NAME, cfg.DATASET.FEATURES, cfg.DATASET.N_MELS = name, "kaldi_fbank", 80
    cfg.MODEL.update(model)
    return cfg


def test_wespeaker_resnet34_reaches_the_pooling_with_25_frames_of_10_bins():
    model = build_model(config("wespeaker_resnet34", RESNET_WIDTH=4, POOLING="stats"), 5).eval()
    with torch.no_grad():
        assert model.feature_map(torch.zeros(1, 200, 80)).shape == (1, 32, 25, 10)
    assert model.embedding_size == 2 * 32 * 10
    # 34 layers: the stem, 16 blocks of two convolutions, the classifier.
    convolutions = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convolutions) == 1 + 2 * (3 + 4 + 6 + 3)


def test_wespeaker_resnet34_at_width_32_has_wespeakers_size():
    cfg = config("wespeaker_resnet34", POOLING="stats", EMBEDDING_DIM=256)
    cfg.LOSS.NAME = "aam"
    model = build_model(cfg, 1211)
    # WeSpeaker reports 6.6 M for ResNet34 with its 256-d embedding layer; the classifier (1211 x 256) is apart.
    assert count_parameters(model) - 1211 * 256 == pytest.approx(6.6e6, rel=0.01)


def test_wespeaker_resnet34_trains_and_embeds():
    model = build_model(config("wespeaker_resnet34", RESNET_WIDTH=2, POOLING="astp", EMBEDDING_DIM=8), 3)
    model(torch.randn(2, 40, 80)).sum().backward()
    assert model.stem[0].weight.grad is not None
    assert model.eval()(torch.randn(2, 40, 80)).shape == (2, 8)


@pytest.mark.parametrize("stem,frames", [("published", 7), ("time_keeping", 25)])
def test_the_cell_network_stem_sets_the_frames_at_the_pooling(stem, frames):
    model = build_model(config("model", INIT_CHANNELS=4, LAYERS=3, STEM=stem), 5, AUTOSPEECH).eval()
    with torch.no_grad():
        # A 2-s crop of Kaldi frames (197 from 200 frames' worth of samples).
        feature_map = model.feature_map(torch.zeros(1, 197, 80))
    assert feature_map.shape[2:] == (frames, model.last_map_bins(80)) == (frames, 3)


def test_the_published_stem_is_the_default_and_the_stem_is_part_of_the_recipe():
    assert get_default_config().MODEL.STEM == "published"
    stored = get_default_config()
    stored.MODEL.STEM = "time_keeping"
    with pytest.raises(CheckpointError, match="stem time_keeping but the config has published; set MODEL.STEM"):
        check_recipe({"config": stored.dump()}, get_default_config(), "a run")


@pytest.mark.parametrize("override,named", [
    (["MODEL.STEM", "wide"], "unknown MODEL.STEM 'wide'; valid names: published, time_keeping"),
    (["MODEL.RESNET_WIDTH", "0"], "MODEL.RESNET_WIDTH must be at least 1"),
    (["MODEL.NAME", "resnet50"], "wespeaker_resnet34"),
])
def test_bad_network_values_are_config_errors(override, named, tmp_path):
    with pytest.raises(ConfigError, match=named):
        load_config(argparse.Namespace(cfg=None, opts=["DATASET.DATA_DIR", str(tmp_path), *override]))


def test_wespeaker_resnet34_keeps_its_layout_where_onednn_crashed():
    from functions.trainer import use_faster_memory_format

    model = build_model(config("wespeaker_resnet34", RESNET_WIDTH=2), 3)
    use_faster_memory_format(model, torch.device("cpu"))
    assert model.stem[0].weight.is_contiguous()
    # The shape whose channels-last backward was a segmentation fault (fbank's 100 frames of 80 bins).
    model(torch.randn(2, 100, 80)).sum().backward()
