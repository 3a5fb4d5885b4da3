"""The study's statistics against their definitions, and the search diagnostics on alphas of known change."""
from __future__ import annotations

import math

import pytest
import torch

from functions.search_diagnostics import epoch_diagnostics, genotype_agreement, mean_agreement
from functions.study_statistics import (
    compare_groups, group_summary, kendall_tau, percentile, percentile_interval, variance_components,
)
from models.genotypes import AUTOSPEECH
from models.random_cells import random_genotype


def test_welch_t_and_p_follow_their_formula_on_the_cell_means():
    from scipy import stats

    searched, random = [[54.0, 55.0], [53.0], [40.0, 41.0]], [[31.0], [56.0, 57.0], [42.0], [44.0]]
    a, b = [54.5, 53.0, 40.5], [31.0, 56.5, 42.0, 44.0]
    va, vb = (sum((x - sum(v) / len(v)) ** 2 for x in v) / (len(v) - 1) / len(v) for v in (a, b))
    t = (sum(a) / 3 - sum(b) / 4) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / 2 + vb ** 2 / 3)
    result = compare_groups(searched, random)
    assert result["welch_t"] == pytest.approx(t) and result["p"] == pytest.approx(2 * stats.t.sf(abs(t), df))
    assert result["difference"] == pytest.approx(sum(a) / 3 - sum(b) / 4)
    low, high = result["interval"]
    assert low < result["difference"] < high


def test_a_group_of_one_cell_has_no_spread_interval_or_test():
    assert group_summary([[50.0, 52.0]]) == {"cells": 1, "mean": 51.0, "std": None, "interval": None,
                                             "cell_means": [51.0]}
    result = compare_groups([[50.0]], [[40.0], [45.0]])
    assert result["difference"] == 7.5 and result["interval"] is None and result["welch_t"] is None


def test_variance_components_split_seed_and_cell_spread():
    only_cells = variance_components([[1.0, 1.0], [3.0, 3.0], [5.0, 5.0]])
    assert only_cells["seed_std"] == 0 and only_cells["cell_share"] == 1 and only_cells["cell_std"] == pytest.approx(2)
    only_seeds = variance_components([[1.0, 3.0], [1.0, 3.0], [3.0, 1.0]])
    assert only_seeds["cell_share"] == 0 and only_seeds["seed_std"] == pytest.approx(math.sqrt(2))
    assert variance_components([[1.0], [2.0]]) is None  # no cell with two seeds: no seed variance


def test_percentiles_count_the_cells_beaten_and_ties_half():
    assert percentile(5.0, [1.0, 5.0, 9.0, 2.0]) == 62.5
    result = percentile_interval([10.0, 10.0], [[1.0], [2.0], [3.0]])
    assert result["percentile"] == 100 and result["interval"] == [100.0, 100.0]


def test_kendall_tau_of_a_perfect_and_a_reversed_ranking():
    assert kendall_tau([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0])["tau"] == pytest.approx(1)
    reversed_ranking = kendall_tau([4.0, 3.0, 2.0, 1.0, 0.0], [10.0, 20.0, 30.0, 40.0, 50.0])
    assert reversed_ranking["tau"] == pytest.approx(-1) and reversed_ranking["interval"][1] == pytest.approx(-1)
    assert kendall_tau([1.0, 2.0], [1.0, 2.0])["tau"] is None


def test_diagnostics_are_linear_in_the_change_of_the_alphas():
    start = {cell: torch.zeros(14, 8) for cell in ("normal", "reduce")}
    moved = {cell: torch.zeros(14, 8) for cell in ("normal", "reduce")}
    moved["normal"][3, 5] = 0.05  # 10 steps of lr 0.005, all the same way
    moved["reduce"][0, 2] = 0.01
    diagnostics = epoch_diagnostics(moved, start, start, steps=10, total_steps=10, lr=0.005)
    row = diagnostics["row"]
    assert row["arch_move_normal"] == pytest.approx(1.0) and row["arch_move_reduce"] == pytest.approx(0.2)
    weights = torch.softmax(moved["normal"][3], dim=-1)
    assert diagnostics["edges"]["normal"]["spread"][3] == pytest.approx(float(weights.max() - weights.min()))
    assert row["arch_changed_normal"] == 1 and row["arch_changed_reduce"] == 1
    twice = epoch_diagnostics({c: 2 * a for c, a in moved.items()}, start, start, 10, 10, 0.005)["row"]
    assert twice["arch_spread_max_normal"] == pytest.approx(2 * row["arch_spread_max_normal"], rel=0.05)


def test_agreement_of_derived_cells():
    assert genotype_agreement(AUTOSPEECH, AUTOSPEECH) == {"edges": 1.0, "operations": 1.0}
    other = random_genotype("s2", 1)
    shares = genotype_agreement(AUTOSPEECH, other)
    assert 0 <= shares["operations"] <= shares["edges"] <= 1
    assert mean_agreement([AUTOSPEECH]) is None
    assert mean_agreement([AUTOSPEECH, AUTOSPEECH, other]) == pytest.approx(
        {key: (1 + 2 * shares[key]) / 3 for key in shares})
