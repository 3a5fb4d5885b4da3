"""AS-norm against a 3-trial, 4-cohort case computed by hand; the cohort of speaker means."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from functions.score_norm import adaptive_symmetric_norm, score_normalisation, speaker_means

# Unit-length utterance embeddings; the cohort is the 4 axes, so an embedding's cohort scores are its components.
UTTERANCES = torch.tensor([
    [0.1, 0.7, 0.1, 0.7],  # A: top 3 scores 0.7, 0.7, 0.1 -> mean 0.5, population std sqrt(0.08)
    [0.8, 0.6, 0.0, 0.0],  # B: top 3 scores 0.8, 0.6, 0.0 -> mean 7/15, population std sqrt(26)/15
    [0.0, 0.0, 0.6, 0.8],  # C: as B
])
COHORT = torch.eye(4)
FIRST, SECOND = [0, 0, 1], [1, 2, 2]
RAW = np.array([0.5, 0.62, 0.0])  # A.B, A.C, B.C


def test_asnorm_matches_a_hand_computed_case() -> None:
    mean_a, std_a = 0.5, math.sqrt(0.08)
    mean_b, std_b = 7 / 15, math.sqrt(26) / 15

    def norm(score, mean_e, std_e, mean_t, std_t):
        return 0.5 * ((score - mean_e) / std_e + (score - mean_t) / std_t)

    expected = [
        norm(0.5, mean_a, std_a, mean_b, std_b),
        norm(0.62, mean_a, std_a, mean_b, std_b),
        norm(0.0, mean_b, std_b, mean_b, std_b),
    ]
    normalised = adaptive_symmetric_norm(RAW, UTTERANCES, FIRST, SECOND, COHORT, 3)
    np.testing.assert_allclose(normalised, expected, atol=1e-9)


def test_asnorm_is_symmetric_in_the_two_sides_of_a_trial() -> None:
    forward = adaptive_symmetric_norm(RAW, UTTERANCES, FIRST, SECOND, COHORT, 3)
    backward = adaptive_symmetric_norm(RAW, UTTERANCES, SECOND, FIRST, COHORT, 3)
    np.testing.assert_allclose(forward, backward, atol=1e-12)


def test_a_cohort_size_above_the_cohort_takes_the_whole_cohort() -> None:
    np.testing.assert_allclose(adaptive_symmetric_norm(RAW, UTTERANCES, FIRST, SECOND, COHORT, 300),
                               adaptive_symmetric_norm(RAW, UTTERANCES, FIRST, SECOND, COHORT, 4))


def test_cohort_is_the_mean_of_each_speakers_normalised_embeddings() -> None:
    embeddings = torch.tensor([[3.0, 0.0], [0.0, 2.0], [0.0, -5.0], [1.0, 1.0]])
    means = speaker_means(embeddings, torch.tensor([0, 0, 1, 1]))
    half = 1 / math.sqrt(2)
    torch.testing.assert_close(means, torch.tensor([[0.5, 0.5], [half / 2, (half - 1) / 2]], dtype=torch.float64))


def test_score_norm_registry() -> None:
    assert score_normalisation("none") is None
    assert score_normalisation("asnorm") is adaptive_symmetric_norm
    with pytest.raises(ValueError, match="none, asnorm"):
        score_normalisation("snorm")


def test_centring_subtracts_the_training_mean_from_trials_and_cohort() -> None:
    from functions.evaluation import CohortScoring, normalised_scores, score_trials
    from functions.distributed import single_process

    training = torch.tensor([[1.0, 2.0], [3.0, 0.0], [2.0, 1.0], [2.0, 3.0]])
    trials = torch.tensor([[3.0, 2.0], [1.0, 1.0], [2.0, 0.0]])

    class Passthrough(torch.nn.Module):
        def forward(self, x):
            return x.flatten(1)

    class Utterances(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, index):
            return training[index].view(1, 2), index // 2

    raw = score_trials(trials, [0, 0], [1, 2])
    cohort = CohortScoring("asnorm", Utterances(), 2, subtract_mean=True)
    scored = normalised_scores(Passthrough(), raw, trials, [0, 0], [1, 2], cohort, single_process("cpu"))
    # The training mean is (2, 1.5): trials and cohort utterances are taken relative to it.
    expected = adaptive_symmetric_norm(score_trials(trials - torch.tensor([2.0, 1.5]), [0, 0], [1, 2]),
                                       trials.double() - torch.tensor([2.0, 1.5], dtype=torch.float64), [0, 0], [1, 2],
                                       speaker_means(training - torch.tensor([2.0, 1.5]), torch.tensor([0, 0, 1, 1])), 2)
    np.testing.assert_allclose(scored["asnorm"], expected, atol=1e-9)
    plain = normalised_scores(Passthrough(), raw, trials, [0, 0], [1, 2], CohortScoring("asnorm", Utterances(), 2),
                              single_process("cpu"))
    assert not np.allclose(plain["asnorm"], scored["asnorm"])
