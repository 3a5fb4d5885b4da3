import json

import numpy as np
import pytest
import torch

from functions.metrics import equal_error_point, equal_error_rate, minimum_detection_cost, topk_correct


def test_eer_matches_published_definition_on_fixture_cases(fixtures_dir):
    cases = json.loads((fixtures_dir / "eer_cases.json").read_text())
    assert len(cases) == 5
    for case in cases:
        assert equal_error_rate(case["scores"], case["labels"]) == pytest.approx(case["eer"], abs=1e-12)


def test_eer_hand_computed_cases():
    assert equal_error_rate([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 0.0
    assert equal_error_rate([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 1.0
    # One target below one non-target: miss 1/2 and false alarm 1/2 cross at the third threshold.
    assert equal_error_rate([0.9, 0.3, 0.5, 0.1], [1, 1, 0, 0]) == 0.5
    # Four of each, one overlap on each side: the error rates cross at 1/4.
    scores = [0.9, 0.8, 0.7, 0.35, 0.4, 0.3, 0.2, 0.1]
    assert equal_error_rate(scores, [1, 1, 1, 1, 0, 0, 0, 0]) == 0.25


def test_threshold_at_eer_accepts_as_many_targets_as_the_eer_says():
    # Accepting the scores >= 0.4 misses one target of four and accepts one non-target of four: both rates 1/4.
    scores = [0.9, 0.8, 0.7, 0.35, 0.4, 0.3, 0.2, 0.1]
    assert equal_error_point(scores, [1, 1, 1, 1, 0, 0, 0, 0]) == (0.25, 0.4)
    assert equal_error_point([0.9, 0.3, 0.5, 0.1], [1, 1, 0, 0]) == (0.5, 0.5)


def test_min_dcf_hand_computed():
    scores, labels = [0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]
    assert minimum_detection_cost(scores, labels, p_target=0.01) == 0.0
    # Reversed scores: best is to reject all (cost p_target * 1) = the default cost, so normalised 1.0.
    assert minimum_detection_cost(scores[::-1], labels, p_target=0.05) == pytest.approx(1.0)
    # One target of four below every non-target: accepting all but that one misses 1/4 at no false alarm.
    scores = [0.9, 0.8, 0.7, 0.05, 0.4, 0.3, 0.2, 0.1]
    labels = [1, 1, 1, 1, 0, 0, 0, 0]
    p = 0.05
    expected = min(0.25 * p, 1.0 * p, 1.0 * (1 - p)) / min(p, 1 - p)
    assert minimum_detection_cost(scores, labels, p_target=p) == pytest.approx(expected)


def test_metrics_reject_one_class_and_nan():
    with pytest.raises(ValueError, match="both target"):
        equal_error_rate([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        equal_error_rate([np.nan, 0.2], [1, 0])


def test_topk_correct_counts_and_caps_k():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.05], [0.2, 0.3, 0.5]])
    targets = torch.tensor([1, 2, 0])
    top1, top2, top5 = topk_correct(logits, targets, (1, 2, 5))
    assert top1.tolist() == [True, False, False]
    assert top2.tolist() == [True, False, False]
    assert top5.tolist() == [True, True, True]
