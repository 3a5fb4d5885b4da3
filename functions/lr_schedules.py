"""The learning-rate schedule over epochs (TRAIN.LR_SCHEDULE), chosen by name; stepped after each epoch, so that a
resumed run replays it exactly.

- `cosine` (the paper's): cosine annealing from TRAIN.LR to TRAIN.LR_MIN over TRAIN.END_EPOCH epochs.
- `exponential` (WeSpeaker's ExponentialDecrease): TRAIN.LR * (LR_MIN / LR)^(epoch / END_EPOCH), a straight line
  in log-rate from LR at epoch 0 to LR_MIN at the end. WeSpeaker steps it per batch; here per epoch.

TRAIN.WARMUP_EPOCHS W > 0 multiplies either by a linear warm-up: epoch e < W trains at (e + 1) / W of the
scheduled rate (WeSpeaker warms up for 6 of 150 epochs, and 1 in its large-margin stage).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from yacs.config import CfgNode

from utils.config import ConfigError

Factor = Callable[[int], float]


def cosine_factor(cfg: CfgNode) -> Factor:
    """lr(e) / LR of cosine annealing; with TRAIN.PUBLISHED_LR_LAG epoch e trains at lr(max(0, e - 1)), as the
    published scripts' `step(epoch)` did (it sets the closed form at `epoch` after that epoch has run)."""
    floor, epochs = cfg.TRAIN.LR_MIN / cfg.TRAIN.LR, cfg.TRAIN.END_EPOCH
    lag = 1 if cfg.TRAIN.PUBLISHED_LR_LAG else 0

    def factor(epoch: int) -> float:
        return floor + (1 - floor) * (1 + math.cos(math.pi * max(0, epoch - lag) / epochs)) / 2

    return factor


def exponential_factor(cfg: CfgNode) -> Factor:
    if cfg.TRAIN.LR_MIN <= 0.0:
        raise ConfigError("TRAIN.LR_SCHEDULE exponential needs TRAIN.LR_MIN above 0 (the rate it decays to)")
    log_ratio, epochs = math.log(cfg.TRAIN.LR_MIN / cfg.TRAIN.LR), cfg.TRAIN.END_EPOCH

    def factor(epoch: int) -> float:
        return math.exp(log_ratio * min(epoch, epochs) / epochs)

    return factor


LR_SCHEDULES: dict[str, Callable[[CfgNode], Factor]] = {"cosine": cosine_factor, "exponential": exponential_factor}


def build_lr_schedule(cfg: CfgNode, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LambdaLR:
    """The schedule TRAIN.LR_SCHEDULE names, with TRAIN.WARMUP_EPOCHS of warm-up, over the optimiser's rates."""
    if cfg.TRAIN.LR_SCHEDULE not in LR_SCHEDULES:
        raise ConfigError(f"unknown TRAIN.LR_SCHEDULE '{cfg.TRAIN.LR_SCHEDULE}'; valid names: "
                          f"{', '.join(LR_SCHEDULES)}")
    scheduled, warmup = LR_SCHEDULES[cfg.TRAIN.LR_SCHEDULE](cfg), cfg.TRAIN.WARMUP_EPOCHS

    def factor(epoch: int) -> float:
        return scheduled(epoch) * (min(1.0, (epoch + 1) / warmup) if warmup else 1.0)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
