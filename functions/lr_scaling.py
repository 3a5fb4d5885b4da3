"""Learning rates of a search whose global batch differs from the published one (2).

The rule multiplies every learning rate of the search (weights: TRAIN.LR and TRAIN.LR_MIN; architecture:
TRAIN.ARCH_LR) by rule(global batch / TRAIN.SEARCH_REFERENCE_BATCH). 'sqrt' is the rule for Adam, which both
optimisers of the search are: Adam's update is normalised by the gradient's scale, so growing the batch k-fold
shrinks the noise of the update by sqrt(k), and the square-root rule keeps the update's noise per unit of
training data the same (Malladi et al., NeurIPS 2022, "On the SDEs and scaling rules for adaptive gradient
algorithms"); 'linear' is the rule for SGD, kept for comparison; 'none' keeps the configured rates (the paper).
Only the learning rates are scaled: the rule as Malladi et al. state it also takes 1 - beta1, 1 - beta2 (times k)
and epsilon (divided by sqrt(k)) along, and those stay as configured here.
"""
from __future__ import annotations

import math
from typing import Callable

from utils.config import ConfigError

LR_SCALING_RULES: dict[str, Callable[[float], float]] = {
    "none": lambda ratio: 1.0,
    "sqrt": math.sqrt,
    "linear": lambda ratio: ratio,
}


def check_rule(name: str) -> None:
    if name not in LR_SCALING_RULES:
        raise ConfigError(f"unknown TRAIN.SEARCH_LR_SCALING '{name}'; valid names: {', '.join(LR_SCALING_RULES)}")


def lr_scale(rule: str, global_batch: int, reference_batch: int) -> float:
    """The factor of every learning rate at `global_batch`, by `rule` relative to `reference_batch`."""
    check_rule(rule)
    return LR_SCALING_RULES[rule](global_batch / reference_batch)
