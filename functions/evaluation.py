"""Identification (Top-1/Top-5) and verification (EER, minDCF) from utterance embeddings.

Every utterance is embedded once: its windows go through the network in batches that hold the windows of
several utterances, and its embedding is the mean of its windows' embeddings. The utterances are cut into
fixed chunks before they are shared between processes, so each chunk is computed exactly as a single process
would compute it and a distributed evaluation gives the same numbers as a single one.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset

from functions.distributed import DistributedContext, all_gather_objects
from functions.metrics import equal_error_point, minimum_detection_cost, topk_correct
from functions.score_norm import centred, score_normalisation, speaker_means
from functions.trainer import use_faster_memory_format
from utils.files import write_text_atomically
from utils.progress import progress

UTTERANCES_PER_BATCH = 16


def _collate_windows(items: list[tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    windows = [torch.as_tensor(item[0]) for item in items]
    counts = torch.tensor([w.size(0) for w in windows])
    labels = torch.tensor([int(item[1]) for item in items])
    return torch.cat(windows), counts, labels


def utterance_chunks(num_utterances: int, ctx: DistributedContext, chunk: int = UTTERANCES_PER_BATCH) -> list[list[int]]:
    """This process's chunks of utterance indices: chunk c goes to rank c mod world size."""
    chunks = [list(range(start, min(start + chunk, num_utterances))) for start in range(0, num_utterances, chunk)]
    return chunks[ctx.rank :: ctx.world_size]


@torch.no_grad()
def embed_utterances(
    model: nn.Module, dataset: Dataset, ctx: DistributedContext, num_workers: int = 0, desc: str = "embedding"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean window embedding, label and window count of every utterance of `dataset`, in dataset order.

    On the CPU the model is left channels-last, as the trainer leaves it (same values, faster convolutions).
    """
    was_training = model.training
    model.eval()
    use_faster_memory_format(model, ctx.device)
    loader = DataLoader(
        dataset,
        batch_sampler=utterance_chunks(len(dataset), ctx),
        collate_fn=_collate_windows,
        num_workers=num_workers,
        pin_memory=ctx.device.type == "cuda",
    )
    pieces = []
    bar = progress(len(loader), desc, "batch", leave=False, enabled=ctx.is_main)
    for windows, counts, labels in loader:
        window_embeddings = model(windows.to(ctx.device, non_blocking=True)).float().cpu()
        owner = torch.repeat_interleave(torch.arange(counts.numel()), counts)
        sums = torch.zeros(counts.numel(), window_embeddings.size(1)).index_add_(0, owner, window_embeddings)
        pieces.append((sums / counts.unsqueeze(1), labels, counts))
        bar.update(1)
    bar.close()
    model.train(was_training)
    gathered = all_gather_objects(ctx, pieces)
    by_chunk = [None] * sum(len(rank_pieces) for rank_pieces in gathered)
    for rank, rank_pieces in enumerate(gathered):
        for position, piece in enumerate(rank_pieces):
            by_chunk[rank + position * ctx.world_size] = piece
    embeddings, labels, counts = (torch.cat([piece[i] for piece in by_chunk]) for i in range(3))
    return embeddings, labels, counts


@torch.no_grad()
def evaluate_identification(
    model: nn.Module, dataset: Dataset, ctx: DistributedContext, num_workers: int = 0
) -> dict[str, float]:
    """Top-1/Top-5 over utterances, and Top-1 weighted by each utterance's window count (the published meter)."""
    embeddings, labels, counts = embed_utterances(model, dataset, ctx, num_workers, desc="identification")
    classifier_device = next(model.parameters()).device
    logits = model.forward_classifier(embeddings.to(classifier_device)).float().cpu()
    top1, top5 = topk_correct(logits, labels, (1, 5))
    weights = counts.double()
    return {
        "top1": 100.0 * top1.double().mean().item(),
        "top5": 100.0 * top5.double().mean().item(),
        "top1_window_weighted": 100.0 * float((top1.double() * weights).sum() / weights.sum()),
        "utterances": int(labels.numel()),
    }


@dataclass
class VerificationResult:
    scores: np.ndarray
    labels: np.ndarray
    eer: float
    # Score at the EER: trials scoring at least this are accepted as the same speaker.
    threshold_at_eer: float
    min_dcf_01: float
    min_dcf_05: float
    # The same trials under each score normalisation that was asked for, by its EVAL.SCORE_NORM name.
    normalised: dict[str, "VerificationResult"] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        """EER (%) and minDCFs of the raw scores, then those of each normalisation with its name as suffix."""
        metrics = {
            "eer": 100.0 * self.eer,
            "threshold_at_eer": self.threshold_at_eer,
            "min_dcf_0.01": self.min_dcf_01,
            "min_dcf_0.05": self.min_dcf_05,
        }
        for name, result in self.normalised.items():
            metrics.update({f"{key}_{name}": value for key, value in result.summary().items() if key != "trials"})
        metrics["trials"] = int(self.labels.size)
        return metrics


@dataclass(frozen=True)
class CohortScoring:
    """A score normalisation (EVAL.SCORE_NORM) with its cohort: utterances labelled by training speaker."""

    name: str
    utterances: Dataset
    size: int
    # EVAL.SCORE_NORM_MEAN: subtract the training utterances' mean embedding before normalising.
    subtract_mean: bool = False


def score_trials(embeddings: torch.Tensor, first: Sequence[int], second: Sequence[int]) -> np.ndarray:
    """Cosine similarity of the embeddings of each trial's two utterances."""
    first_t, second_t = torch.as_tensor(first, dtype=torch.long), torch.as_tensor(second, dtype=torch.long)
    return F.cosine_similarity(embeddings[first_t], embeddings[second_t], dim=1).double().numpy()


def verification_result(scores: np.ndarray, labels: np.ndarray) -> VerificationResult:
    eer, threshold_at_eer = equal_error_point(scores, labels)
    return VerificationResult(
        scores=scores,
        labels=labels,
        eer=eer,
        threshold_at_eer=threshold_at_eer,
        min_dcf_01=minimum_detection_cost(scores, labels, p_target=0.01),
        min_dcf_05=minimum_detection_cost(scores, labels, p_target=0.05),
    )


@torch.no_grad()
def evaluate_verification(
    model: nn.Module,
    utterances: Dataset,
    labels: Sequence[int],
    first: Sequence[int],
    second: Sequence[int],
    ctx: DistributedContext,
    num_workers: int = 0,
    cohort: CohortScoring | None = None,
) -> VerificationResult:
    """Embed each utterance of the trial list once, then score every trial by cosine similarity; with a
    `cohort`, also the normalised scores (in `normalised`)."""
    embeddings, _, _ = embed_utterances(model, utterances, ctx, num_workers, desc="verification")
    scores = score_trials(embeddings, first, second)
    labels = np.asarray(labels, dtype=np.int64)
    result = verification_result(scores, labels)
    for name, normalised in normalised_scores(model, scores, embeddings, first, second, cohort, ctx,
                                              num_workers).items():
        result.normalised[name] = verification_result(normalised, labels)
    return result


def normalised_scores(
    model: nn.Module,
    scores: np.ndarray,
    embeddings: torch.Tensor,
    first: Sequence[int],
    second: Sequence[int],
    cohort: CohortScoring | None,
    ctx: DistributedContext,
    num_workers: int = 0,
) -> dict[str, np.ndarray]:
    """The trial `scores` under the cohort's normalisation, by its name; {} when there is none to apply."""
    normalise = score_normalisation(cohort.name) if cohort is not None else None
    if normalise is None:
        return {}
    cohort_embeddings, speakers, _ = embed_utterances(model, cohort.utterances, ctx, num_workers, desc="cohort")
    if cohort.subtract_mean:
        embeddings, cohort_embeddings = centred(embeddings, cohort_embeddings), centred(cohort_embeddings,
                                                                                          cohort_embeddings)
        scores = score_trials(embeddings, first, second)
    return {cohort.name: normalise(scores, embeddings, first, second, speaker_means(cohort_embeddings, speakers),
                                   cohort.size)}


def write_score_file(path: Path, result: VerificationResult, paths1: Sequence[str], paths2: Sequence[str]) -> None:
    lines = (
        f"{score:.6f} {label} {p1} {p2}\n" for score, label, p1, p2 in zip(result.scores, result.labels, paths1, paths2)
    )
    write_text_atomically(path, "".join(lines))
