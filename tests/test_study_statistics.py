"""The study's statistics against their definitions, and the search diagnostics on alphas of known change."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from functions.search_diagnostics import epoch_diagnostics, genotype_agreement, mean_agreement
from functions.study_statistics import (
    cells_to_bound, compare_groups, group_summary, kendall_tau, percentile, percentile_interval, study_answer,
    variance_components,
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


def _answer(searched: list[list[float]], random: list[list[float]], higher: bool = True) -> dict:
    percentiles = {f"searched_{k}": percentile_interval(cell, random, higher) for k, cell in enumerate(searched)}
    return study_answer(compare_groups(searched, random), percentiles, higher)


def test_a_clear_win_is_shown_and_placed_and_a_wide_tie_answers_nothing():
    random = [[20.0 + k, 21.0 + k] for k in range(0, 20, 2)]  # cell means 20.5 ... 38.5
    win = _answer([[60.0, 61.0], [62.0, 63.0], [61.0, 62.0]], random)
    assert win["shows_searched_better"] and win["p"] < 0.05
    assert win["places_each_searched_cell"] and all(width == 0 for width in win["percentile_widths"].values())
    assert win["answered"]
    tie = _answer([[10.0, 12.0], [29.0, 31.0], [48.0, 50.0]], random)
    assert not (tie["shows_searched_better"] or tie["bounds_difference"] or tie["places_each_searched_cell"])
    assert not tie["answered"] and tie["difference_half_width"] > 4


def test_a_significant_loss_is_no_win_and_a_lower_error_is_one():
    random = [[20.0 + k, 21.0 + k] for k in range(0, 20, 2)]
    searched = [[5.0, 6.0], [6.0, 7.0], [5.5, 6.5]]
    assert not _answer(searched, random)["shows_searched_better"]
    assert _answer(searched, random, higher=False)["shows_searched_better"]


def test_a_tight_difference_bounds_the_study_without_a_win():
    random = [[30.0 + 0.2 * k, 30.1 + 0.2 * k] for k in range(10)]
    searched = [[30.9, 31.0], [30.8, 30.9], [31.0, 31.1]]
    answer = _answer(searched, random)
    assert answer["bounds_difference"] and answer["difference_half_width"] < 4 and answer["answered"]
    loose = _answer([[28.0], [33.0], [38.0]], [[30.0 + k, 31.0 + k] for k in range(10)])
    assert 4 < loose["difference_half_width"] < 6 and not loose["bounds_difference"]


def test_the_study_size_it_names_bounds_the_difference_and_a_quarter_of_it_does_not():
    rng = np.random.default_rng(1)
    needed = cells_to_bound(7.0, 7.0)
    assert needed == 24 and cells_to_bound(None, 7.0) is None

    def half_width(cells: int) -> float:
        groups = [[[float(v)] for v in rng.normal(30.0, 7.0, cells)] for _ in range(2)]
        low, high = compare_groups(*groups)["interval"]
        return (high - low) / 2

    assert 3.2 < np.median([half_width(needed) for _ in range(3)]) < 4.5
    assert np.median([half_width(needed // 4) for _ in range(3)]) > 6.0  # 8 expected: twice as wide


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
    as_error = percentile_interval([10.0, 10.0], [[1.0], [2.0], [3.0]], higher=False)  # the worst error
    assert as_error == {"percentile": 0.0, "interval": [0.0, 0.0]}
    assert percentile_interval([0.5], [[1.0]], higher=False) == {"percentile": 100.0, "interval": None}
    population = [[30.0 + k, 31.0 + k] for k in range(10)]
    middle, middle_error = (percentile_interval([33.0, 36.0], population, higher) for higher in (True, False))
    low, high = middle["interval"]
    assert low < high
    assert middle_error == {"percentile": 100 - middle["percentile"], "interval": [100 - high, 100 - low]}


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
