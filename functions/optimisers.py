"""The optimiser of the network's weights (TRAIN.OPTIMIZER), chosen by name.

- `adam` (the paper's): Adam with TRAIN.BETA1 / BETA2 and L2 weight decay TRAIN.WD.
- `sgd` (WeSpeaker's and voxceleb_trainer's ResNets): SGD with momentum TRAIN.MOMENTUM, Nesterov's form when
  TRAIN.NESTEROV, and weight decay TRAIN.WD.

The search's architecture parameters keep their own Adam (TRAIN.ARCH_*).
"""
from __future__ import annotations

from typing import Callable, Iterable

import torch
from yacs.config import CfgNode

from utils.config import ConfigError


def adam(cfg: CfgNode, parameters: Iterable, lr_scale: float = 1.0) -> torch.optim.Adam:
    return torch.optim.Adam(parameters, lr=cfg.TRAIN.LR * lr_scale, betas=(cfg.TRAIN.BETA1, cfg.TRAIN.BETA2),
                            weight_decay=cfg.TRAIN.WD)


def sgd(cfg: CfgNode, parameters: Iterable, lr_scale: float = 1.0) -> torch.optim.SGD:
    return torch.optim.SGD(parameters, lr=cfg.TRAIN.LR * lr_scale, momentum=cfg.TRAIN.MOMENTUM,
                           nesterov=cfg.TRAIN.NESTEROV, weight_decay=cfg.TRAIN.WD)


OPTIMIZERS: dict[str, Callable[..., torch.optim.Optimizer]] = {"adam": adam, "sgd": sgd}


def check_optimizer_config(cfg: CfgNode) -> None:
    """Combinations torch would refuse only once training starts."""
    if cfg.TRAIN.OPTIMIZER == "sgd" and cfg.TRAIN.NESTEROV and cfg.TRAIN.MOMENTUM == 0.0:
        raise ConfigError("TRAIN.NESTEROV needs TRAIN.MOMENTUM above 0; set TRAIN.NESTEROV False for plain SGD")


def build_optimizer(cfg: CfgNode, parameters: Iterable, lr_scale: float = 1.0) -> torch.optim.Optimizer:
    """The optimiser TRAIN.OPTIMIZER names, at TRAIN.LR times `lr_scale`."""
    if cfg.TRAIN.OPTIMIZER not in OPTIMIZERS:
        raise ConfigError(f"unknown TRAIN.OPTIMIZER '{cfg.TRAIN.OPTIMIZER}'; valid names: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[cfg.TRAIN.OPTIMIZER](cfg, parameters, lr_scale)
