"""How the margin of a margin loss comes in over the epochs (LOSS.MARGIN_SCHEDULE).

The margin is 0 up to epoch LOSS.MARGIN_HOLD_EPOCHS, rises to LOSS.MARGIN at epoch LOSS.MARGIN_WARMUP_EPOCHS and
stays there; `progress` is the fraction of that rise done, t = (epoch - hold) / (warmup - hold) in [0, 1]:

- `linear`: the margin grows as t (hold 0 is the earlier schedule: from 0 at epoch 0).
- `exponential` (WeSpeaker's MarginScheduler, increase_type exp): 1 - 0.001^t, fast at first, then flattening
  towards the full margin, which it takes at t = 1. WeSpeaker steps it per batch; here it is a function of the
  epoch, so that a resumed run uses the margins a run never stopped would have used.
"""
from __future__ import annotations

from typing import Callable

# WeSpeaker's final_val / initial_val of the exponential rise.
EXPONENTIAL_FLOOR = 1e-3


def linear(progress: float) -> float:
    return progress


def exponential(progress: float) -> float:
    return 1.0 if progress >= 1.0 else 1.0 - EXPONENTIAL_FLOOR ** progress


MARGIN_SCHEDULES: dict[str, Callable[[float], float]] = {"linear": linear, "exponential": exponential}


def margin_at(epoch: int, full_margin: float, schedule: str, hold_epochs: int, warmup_epochs: int) -> float:
    """The margin of `epoch` under the named schedule."""
    if schedule not in MARGIN_SCHEDULES:
        raise ValueError(f"unknown LOSS.MARGIN_SCHEDULE {schedule!r}; known: {', '.join(MARGIN_SCHEDULES)}")
    if epoch >= warmup_epochs:
        return full_margin
    if epoch < hold_epochs:
        return 0.0
    return full_margin * MARGIN_SCHEDULES[schedule]((epoch - hold_epochs) / (warmup_epochs - hold_epochs))
