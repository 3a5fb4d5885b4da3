"""Training losses of the speaker classifier (LOSS.NAME), and the classifier each one needs.

`softmax` is the paper's: a linear classifier and cross-entropy with TRAIN.LABEL_SMOOTHING. The margin losses
use a cosine classifier (rows of the weight matrix and the embedding L2-normalised, so its outputs are cos theta)
and give the target class a penalised logit before a plain cross-entropy:

- `aam` (additive angular margin, ArcFace): target s * cos(theta + m) while theta < pi - m; beyond, where
  cos(theta + m) would turn back up, s * (cos(theta) - m * sin(pi - m)) (ArcFace's form with easy_margin off, as
  WeSpeaker and voxceleb_trainer have it), so the target logit keeps falling and its gradient is never zero;
  other classes s * cos(theta).
- `am` (additive margin, AM-softmax): target s * (cos(theta) - m); other classes s * cos(theta).

The margin follows LOSS.MARGIN_SCHEDULE (models/margin_schedules.py) up to LOSS.MARGIN at epoch
LOSS.MARGIN_WARMUP_EPOCHS. It is a function of the epoch only (`set_epoch`), so a resumed run uses the margin a
run never stopped would have used. The loss is computed in float32, also under mixed precision.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from yacs.config import CfgNode

from models.margin_schedules import margin_at

# Keeps sin theta = sqrt(1 - cos^2 theta) away from 0, where its gradient is unbounded.
COSINE_LIMIT = 1.0 - 1e-7


class CosineClassifier(nn.Module):
    """cos theta between each embedding and each class's weight row: [B, classes], in [-1, 1]."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, in_features))
        nn.init.xavier_uniform_(self.weight)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embedding), F.normalize(self.weight))


class SoftmaxLoss(nn.Module):
    """Cross-entropy of a linear classifier's logits, with label smoothing."""

    classifier = nn.Linear

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__()
        self.label_smoothing = cfg.TRAIN.LABEL_SMOOTHING

    def set_epoch(self, epoch: int) -> None:
        """The loss does not change over epochs."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)


class _MarginLoss(nn.Module):
    classifier = CosineClassifier

    def __init__(self, cfg: CfgNode) -> None:
        super().__init__()
        self.full_margin, self.scale = cfg.LOSS.MARGIN, cfg.LOSS.SCALE
        self.schedule = cfg.LOSS.MARGIN_SCHEDULE
        self.hold_epochs, self.warmup_epochs = cfg.LOSS.MARGIN_HOLD_EPOCHS, cfg.LOSS.MARGIN_WARMUP_EPOCHS
        self.margin = self.margin_at(0)

    def margin_at(self, epoch: int) -> float:
        return margin_at(epoch, self.full_margin, self.schedule, self.hold_epochs, self.warmup_epochs)

    def set_epoch(self, epoch: int) -> None:
        self.margin = self.margin_at(epoch)

    def target_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def logits(self, cosine: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """s * cos theta, with the target class's entry replaced by s * target_cosine."""
        cosine = cosine.float().clamp(-COSINE_LIMIT, COSINE_LIMIT)
        target = cosine.gather(1, targets.view(-1, 1))
        return self.scale * cosine.scatter(1, targets.view(-1, 1), self.target_cosine(target))

    def forward(self, cosine: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(self.logits(cosine, targets), targets)


class AdditiveAngularMarginLoss(_MarginLoss):
    def target_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        sine = (1.0 - cosine.square()).clamp_min(0.0).sqrt()
        shifted = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
        beyond = cosine - self.margin * math.sin(math.pi - self.margin)
        return torch.where(cosine > math.cos(math.pi - self.margin), shifted, beyond)


class AdditiveMarginLoss(_MarginLoss):
    def target_cosine(self, cosine: torch.Tensor) -> torch.Tensor:
        return cosine - self.margin


LOSSES: dict[str, type[nn.Module]] = {
    "softmax": SoftmaxLoss,
    "aam": AdditiveAngularMarginLoss,
    "am": AdditiveMarginLoss,
}


def _loss_class(name: str) -> type[nn.Module]:
    if name not in LOSSES:
        raise ValueError(f"unknown LOSS.NAME {name!r}; known: {', '.join(LOSSES)}")
    return LOSSES[name]


def build_loss(cfg: CfgNode) -> nn.Module:
    """The criterion of LOSS.NAME: `criterion(classifier outputs, targets)`; call `set_epoch` at each epoch."""
    return _loss_class(cfg.LOSS.NAME)(cfg)


def build_classifier(loss_name: str, in_features: int, num_classes: int) -> nn.Module:
    """The classifier the loss `loss_name` trains: linear for softmax, cosine for the margin losses."""
    return _loss_class(loss_name).classifier(in_features, num_classes)


def classifier_kind(loss_name: str) -> str:
    """'linear' or 'cosine': what a checkpoint's classifier is, which evaluation must rebuild alike."""
    return "cosine" if _loss_class(loss_name).classifier is CosineClassifier else "linear"
