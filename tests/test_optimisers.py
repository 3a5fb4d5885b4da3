"""Optimisers and learning-rate schedules chosen by name: SGD with Nesterov momentum and weight decay, WeSpeaker's
exponential decay, the warm-up, and their bad values."""
from __future__ import annotations

import argparse
import math
import re

import pytest
import torch

from functions.experiment import load_config
from functions.lr_schedules import build_lr_schedule
from functions.optimisers import build_optimizer
from utils.config import ConfigError, get_default_config


def schedule_rates(cfg, epochs: int) -> list[float]:
    optimizer = build_optimizer(cfg, [torch.nn.Parameter(torch.zeros(1))])
    scheduler = build_lr_schedule(cfg, optimizer)
    rates = []
    for _ in range(epochs):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_sgd_is_nesterov_momentum_with_weight_decay() -> None:
    cfg = get_default_config()
    cfg.TRAIN.OPTIMIZER, cfg.TRAIN.LR, cfg.TRAIN.WD = "sgd", 0.1, 1e-4
    weight = torch.nn.Parameter(torch.tensor([1.0]))
    optimizer = build_optimizer(cfg, [weight])
    assert isinstance(optimizer, torch.optim.SGD)
    group = optimizer.param_groups[0]
    assert (group["momentum"], group["nesterov"], group["weight_decay"]) == (0.9, True, 1e-4)
    # Two steps of a constant gradient 1 by hand: g = 1 + wd * w, buffer b = 0.9 b + g, step g + 0.9 b.
    w, buffer = 1.0, 0.0
    for _ in range(2):
        weight.grad = torch.tensor([1.0])
        optimizer.step()
        g = 1.0 + 1e-4 * w
        buffer = 0.9 * buffer + g
        w -= 0.1 * (g + 0.9 * buffer)
    assert weight.item() == pytest.approx(w, rel=1e-6)


def test_exponential_decay_after_a_warm_up_as_wespeaker() -> None:
    cfg = get_default_config()
    cfg.TRAIN.LR, cfg.TRAIN.LR_MIN, cfg.TRAIN.END_EPOCH = 0.1, 5e-5, 150
    cfg.TRAIN.LR_SCHEDULE, cfg.TRAIN.WARMUP_EPOCHS = "exponential", 6
    rates = schedule_rates(cfg, 150)
    decay = [0.1 * math.exp(math.log(5e-4) * epoch / 150) for epoch in range(150)]
    assert rates[:6] == pytest.approx([decay[e] * (e + 1) / 6 for e in range(6)], rel=1e-9)
    assert rates[6:] == pytest.approx(decay[6:], rel=1e-9)
    assert rates[-1] == pytest.approx(5e-5 * (0.1 / 5e-5) ** (1 / 150), rel=1e-9)


def test_cosine_keeps_its_rates_and_takes_the_warm_up() -> None:
    cfg = get_default_config()
    cfg.TRAIN.LR, cfg.TRAIN.LR_MIN, cfg.TRAIN.END_EPOCH = 0.01, 0.001, 4
    cosine = [0.001 + 0.009 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)]
    assert schedule_rates(cfg, 4) == pytest.approx(cosine, rel=1e-12)
    cfg.TRAIN.WARMUP_EPOCHS = 2
    assert schedule_rates(cfg, 4) == pytest.approx([cosine[0] / 2, *cosine[1:]], rel=1e-12)


@pytest.mark.parametrize("override,named", [
    (["TRAIN.OPTIMIZER", "adamw"], "unknown TRAIN.OPTIMIZER 'adamw'; valid names: adam, sgd"),
    (["TRAIN.LR_SCHEDULE", "step"], "unknown TRAIN.LR_SCHEDULE 'step'; valid names: cosine, exponential"),
    (["TRAIN.MOMENTUM", "1.0"], "TRAIN.MOMENTUM must be in [0, 1)"),
    (["TRAIN.WARMUP_EPOCHS", "-1"], "TRAIN.WARMUP_EPOCHS must be at least 0"),
    (["TRAIN.OPTIMIZER", "sgd", "TRAIN.MOMENTUM", "0.0"], "TRAIN.NESTEROV needs TRAIN.MOMENTUM above 0"),
])
def test_bad_optimiser_values_are_config_errors_naming_the_key(override, named, tmp_path) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(argparse.Namespace(cfg=None, opts=["DATASET.DATA_DIR", str(tmp_path), *override]))


def test_exponential_decay_to_zero_is_refused() -> None:
    cfg = get_default_config()
    cfg.TRAIN.LR_SCHEDULE, cfg.TRAIN.LR_MIN = "exponential", 0.0
    with pytest.raises(ConfigError, match="TRAIN.LR_MIN above 0"):
        schedule_rates(cfg, 1)
