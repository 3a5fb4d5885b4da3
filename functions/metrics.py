"""Scores people compare: identification accuracy, equal error rate and minimum detection cost."""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch


def topk_correct(logits: torch.Tensor, targets: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[torch.Tensor]:
    """Per-sample booleans: is the target among the k highest logits, for each k (k is capped at the class count)."""
    max_k = min(max(ks), logits.size(1))
    top = logits.topk(max_k, dim=1).indices
    hits = top.eq(targets.view(-1, 1))
    return [hits[:, : min(k, max_k)].any(dim=1) for k in ks]


def _check_trials(scores: np.ndarray, labels: np.ndarray) -> None:
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores and labels must be 1-d of equal length, got {scores.shape} and {labels.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or infinite values")
    n_target = int(labels.sum())
    if n_target == 0 or n_target == labels.size:
        raise ValueError("trials need both target (1) and non-target (0) labels")


def equal_error_rate(scores: Sequence[float], labels: Sequence[int]) -> float:
    """EER as the paper computes it: the false-acceptance rate where |miss rate - false-acceptance rate| is smallest."""
    return equal_error_point(scores, labels)[0]


def equal_error_point(scores: Sequence[float], labels: Sequence[int]) -> tuple[float, float]:
    """The EER and its decision threshold: a trial scoring at least the threshold is accepted as the same speaker."""
    from sklearn.metrics import roc_curve  # a second to import; scripts that fail early should not pay for it

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    _check_trials(scores, labels)
    fpr, tpr, thresholds = roc_curve(labels, scores, pos_label=1)
    best = np.argmin(np.abs((1.0 - tpr) - fpr))
    return float(fpr[best]), float(thresholds[best])


def minimum_detection_cost(
    scores: Sequence[float], labels: Sequence[int], p_target: float, c_miss: float = 1.0, c_fa: float = 1.0
) -> float:
    """Normalised minimum detection cost over all thresholds (NIST SRE definition)."""
    from sklearn.metrics import roc_curve

    scores, labels = np.asarray(scores, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    _check_trials(scores, labels)
    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1, drop_intermediate=False)
    detection_cost = c_miss * (1.0 - tpr) * p_target + c_fa * fpr * (1.0 - p_target)
    default_cost = min(c_miss * p_target, c_fa * (1.0 - p_target))
    return float(detection_cost.min() / default_cost)
