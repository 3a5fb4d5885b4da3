"""Score normalisations of verification (EVAL.SCORE_NORM), each reported next to the raw cosine scores.

`asnorm` (adaptive symmetric normalisation, Matejka et al., 2017): for a trial of utterances e and t with
cosine score s, S_e holds the top-N cosine scores of e against a cohort and S_t those of t;
s_norm = ((s - mean S_e) / std S_e + (s - mean S_t) / std S_t) / 2, std the population standard deviation
(N in the denominator, as WeSpeaker's score_norm). The cohort is one embedding per training speaker: the mean
of the speaker's L2-normalised utterance embeddings.

With EVAL.SCORE_NORM_MEAN (WeSpeaker's cal_mean) the mean of the training utterances' embeddings is first
subtracted from every trial and cohort embedding (`centred`), and s is the cosine of the centred trial
embeddings: the direction all embeddings share carries no speaker and inflates every cosine.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

# A cohort score spread this small would blow the normalised score up; it means a degenerate cohort.
STD_FLOOR = 1e-8

Normalisation = Callable[[np.ndarray, torch.Tensor, Sequence[int], Sequence[int], torch.Tensor, int], np.ndarray]


def speaker_means(embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One row per label (0 .. max): the mean of that label's L2-normalised embeddings."""
    normalised = F.normalize(embeddings.double(), dim=1)
    count = int(labels.max()) + 1
    sums = torch.zeros(count, embeddings.size(1), dtype=torch.float64).index_add_(0, labels, normalised)
    sizes = torch.bincount(labels, minlength=count).clamp_min(1).unsqueeze(1)
    return sums / sizes


def _top_cohort_statistics(embeddings: torch.Tensor, cohort: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Mean and population standard deviation of each embedding's `size` highest cosine scores against the
    cohort."""
    scores = F.normalize(embeddings.double(), dim=1) @ F.normalize(cohort.double(), dim=1).T
    top = scores.topk(min(size, cohort.size(0)), dim=1).values
    return top.mean(dim=1), top.std(dim=1, correction=0).clamp_min(STD_FLOOR)


def centred(embeddings: torch.Tensor, training_embeddings: torch.Tensor) -> torch.Tensor:
    """`embeddings` minus the mean of the training utterances' embeddings (float64)."""
    return embeddings.double() - training_embeddings.double().mean(dim=0)


def adaptive_symmetric_norm(
    scores: np.ndarray, embeddings: torch.Tensor, first: Sequence[int], second: Sequence[int],
    cohort: torch.Tensor, size: int,
) -> np.ndarray:
    """AS-norm of trial `scores`; trial i compares embeddings[first[i]] with embeddings[second[i]]."""
    mean, std = _top_cohort_statistics(embeddings, cohort, size)
    first_t, second_t = torch.as_tensor(first, dtype=torch.long), torch.as_tensor(second, dtype=torch.long)
    raw = torch.as_tensor(scores, dtype=torch.float64)
    normalised = 0.5 * ((raw - mean[first_t]) / std[first_t] + (raw - mean[second_t]) / std[second_t])
    return normalised.numpy()


# 'none' reports the raw scores only.
SCORE_NORMS: dict[str, Normalisation | None] = {
    "none": None,
    "asnorm": adaptive_symmetric_norm,
}


def score_normalisation(name: str) -> Normalisation | None:
    if name not in SCORE_NORMS:
        raise ValueError(f"unknown EVAL.SCORE_NORM {name!r}; known: {', '.join(SCORE_NORMS)}")
    return SCORE_NORMS[name]
