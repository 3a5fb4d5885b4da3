"""Margin losses against a case computed by hand, the margin warm-up, and the cosine classifier."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from models.losses import CosineClassifier, build_classifier, build_loss
from utils.config import get_default_config

# Cosines of 2 embeddings against 3 classes; targets 1 and 0.
COSINES = torch.tensor([[0.5, 0.8, -0.2], [0.6, 0.1, 0.3]])
TARGETS = torch.tensor([1, 0])


def loss_config(name: str, margin: float = 0.2, scale: float = 30.0, warmup: int = 0):
    cfg = get_default_config()
    cfg.LOSS.NAME, cfg.LOSS.MARGIN, cfg.LOSS.SCALE, cfg.LOSS.MARGIN_WARMUP_EPOCHS = name, margin, scale, warmup
    return cfg


def test_aam_logits_match_a_hand_computed_case() -> None:
    loss = build_loss(loss_config("aam", margin=0.2, scale=30.0))
    # Target of row 0: cos(acos(0.8) + 0.2) = 0.8 cos 0.2 - 0.6 sin 0.2; row 1: 0.6 cos 0.2 - 0.8 sin 0.2.
    expected = 30.0 * torch.tensor([
        [0.5, 0.8 * math.cos(0.2) - 0.6 * math.sin(0.2), -0.2],
        [0.6 * math.cos(0.2) - 0.8 * math.sin(0.2), 0.1, 0.3],
    ])
    torch.testing.assert_close(loss.logits(COSINES, TARGETS), expected, atol=1e-5, rtol=0)
    torch.testing.assert_close(loss(COSINES, TARGETS), F.cross_entropy(expected, TARGETS), atol=1e-5, rtol=0)


def test_am_logits_match_a_hand_computed_case() -> None:
    loss = build_loss(loss_config("am", margin=0.35, scale=10.0))
    expected = 10.0 * torch.tensor([[0.5, 0.8 - 0.35, -0.2], [0.6 - 0.35, 0.1, 0.3]])
    torch.testing.assert_close(loss.logits(COSINES, TARGETS), expected, atol=1e-6, rtol=0)


def test_aam_target_logit_keeps_falling_past_pi_minus_the_margin() -> None:
    loss = build_loss(loss_config("aam", margin=0.5, scale=1.0))
    cosines = torch.tensor([[math.cos(math.pi - 0.6), 0.0], [math.cos(math.pi - 0.3), 0.0], [-1.0, 0.0]])
    targets = torch.zeros(3, dtype=torch.long)
    target_logits = loss.logits(cosines, targets)[:, 0]
    assert (target_logits[1:] < target_logits[:-1]).all()
    # ArcFace beyond pi - m: cos theta - m sin(pi - m).
    assert target_logits[-1].item() == pytest.approx(-1.0 - 0.5 * math.sin(math.pi - 0.5), abs=1e-6)


def test_aam_gradient_is_not_zero_past_pi_minus_the_margin() -> None:
    loss = build_loss(loss_config("aam", margin=0.2, scale=32.0))
    # theta between pi - m and pi, where the earlier cap at pi left the target logit constant.
    cosines = torch.tensor([[math.cos(math.pi - 0.1), 0.3, 0.1], [math.cos(math.pi - 0.05), -0.2, 0.4]],
                           requires_grad=True)
    loss(cosines, torch.tensor([0, 0])).backward()
    assert (cosines.grad[:, 0] < -0.1).all()


def test_margin_rises_linearly_over_the_warmup_epochs_then_stays() -> None:
    loss = build_loss(loss_config("aam", margin=0.2, warmup=4))
    margins = []
    for epoch in range(7):
        loss.set_epoch(epoch)
        margins.append(loss.margin)
    assert margins == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.2])
    # A function of the epoch alone: going back (a resume) gives the same margin.
    loss.set_epoch(2)
    assert loss.margin == pytest.approx(0.1)


def test_exponential_margin_holds_then_rises_as_wespeaker_does() -> None:
    cfg = loss_config("aam", margin=0.2, warmup=40)
    cfg.LOSS.MARGIN_SCHEDULE, cfg.LOSS.MARGIN_HOLD_EPOCHS = "exponential", 20
    loss = build_loss(cfg)
    margins = {}
    for epoch in (0, 19, 20, 25, 30, 39, 40, 60):
        loss.set_epoch(epoch)
        margins[epoch] = loss.margin
    assert margins[0] == margins[19] == margins[20] == 0.0
    # 1 - 0.001^t of the margin at t = (epoch - 20) / 20.
    assert margins[25] == pytest.approx(0.2 * (1 - 0.001 ** 0.25))
    assert margins[30] == pytest.approx(0.2 * (1 - 0.001 ** 0.5))
    assert margins[39] == pytest.approx(0.2 * (1 - 0.001 ** 0.95))
    assert margins[40] == margins[60] == pytest.approx(0.2)
    cfg.LOSS.MARGIN_SCHEDULE = "linear"
    loss = build_loss(cfg)
    loss.set_epoch(30)
    assert loss.margin == pytest.approx(0.1)


@pytest.mark.parametrize("override,named", [
    (["LOSS.MARGIN_SCHEDULE", "cosine"], "unknown LOSS.MARGIN_SCHEDULE 'cosine'; valid names: linear, exponential"),
    (["LOSS.MARGIN_HOLD_EPOCHS", "30", "LOSS.MARGIN_WARMUP_EPOCHS", "20"], "LOSS.MARGIN_HOLD_EPOCHS must be at most"),
])
def test_bad_margin_schedules_are_config_errors(override, named, tmp_path) -> None:
    import argparse
    import re

    from functions.experiment import load_config
    from utils.config import ConfigError

    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(argparse.Namespace(cfg=None, opts=["DATASET.DATA_DIR", str(tmp_path), *override]))


def test_no_warmup_means_the_full_margin_from_epoch_0() -> None:
    loss = build_loss(loss_config("am", margin=0.3))
    loss.set_epoch(0)
    assert loss.margin == pytest.approx(0.3)


def test_softmax_is_cross_entropy_with_label_smoothing() -> None:
    cfg = loss_config("softmax")
    cfg.TRAIN.LABEL_SMOOTHING = 0.1
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    probabilities = logits.softmax(1)[0]
    expected = -(0.9 * probabilities[0].log() + 0.1 / 3 * probabilities.log().sum())
    assert build_loss(cfg)(logits, torch.tensor([0])).item() == pytest.approx(expected.item(), rel=1e-6)


def test_cosine_classifier_outputs_cosines_and_margin_losses_use_it() -> None:
    classifier = CosineClassifier(4, 3)
    embedding = torch.randn(5, 4)
    expected = torch.stack([F.cosine_similarity(embedding, row.expand(5, 4), dim=1) for row in classifier.weight], 1)
    torch.testing.assert_close(classifier(embedding), expected.detach(), atol=1e-6, rtol=0)
    assert isinstance(build_classifier("aam", 4, 3), CosineClassifier)
    assert isinstance(build_classifier("softmax", 4, 3), torch.nn.Linear)


def test_unknown_loss_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="softmax, aam, am"):
        build_loss(loss_config("arcface"))
