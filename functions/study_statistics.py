"""The study's statistics, on cells each trained with several seeds.

A cell's value is the mean over its seeds. Groups (searched, random) are compared on those means: bootstrap 95 %
intervals resample the cells of a group (and, inside each drawn cell, its seeds), Welch's t and p are scipy's.
The variance components split the random cells' results into the spread between seeds of one cell and the
spread between cells (one-way random-effects analysis of variance). Figures that need more members than there
are come back as None, which the report prints as "-".
"""
from __future__ import annotations

import math

import numpy as np

BOOTSTRAP_DRAWS = 2000
BOOTSTRAP_SEED = 0


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _std(values: list[float]) -> float | None:
    return float(np.std(values, ddof=1)) if len(values) > 1 else None


def _resampled_means(cells: list[list[float]], rng: np.random.Generator) -> np.ndarray:
    """Bootstrap draws of a group's mean: cells drawn with replacement, then each drawn cell's seeds."""
    draws = np.empty(BOOTSTRAP_DRAWS)
    for draw in range(BOOTSTRAP_DRAWS):
        picked = rng.integers(len(cells), size=len(cells))
        draws[draw] = np.mean([np.mean(rng.choice(cells[k], size=len(cells[k]))) for k in picked])
    return draws


def _interval(draws: np.ndarray) -> list[float]:
    return [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]


def group_summary(cells: list[list[float]]) -> dict:
    """Cells (each its seeds' values): mean of the cell means, their standard deviation and a bootstrap 95 %
    interval of the mean (None for one cell)."""
    means = [_mean(cell) for cell in cells]
    interval = None
    if len(cells) > 1:
        interval = _interval(_resampled_means(cells, np.random.default_rng(BOOTSTRAP_SEED)))
    return {"cells": len(cells), "mean": _mean(means), "std": _std(means), "interval": interval,
            "cell_means": means}


def compare_groups(first: list[list[float]], second: list[list[float]]) -> dict:
    """first - second: difference of the means with a bootstrap 95 % interval, Welch's t and two-sided p on the
    cell means (None where a group has fewer than two cells)."""
    from scipy import stats  # slow to import; only the report needs it

    a, b = [_mean(cell) for cell in first], [_mean(cell) for cell in second]
    result: dict = {"difference": _mean(a) - _mean(b), "interval": None, "welch_t": None, "p": None}
    if len(a) < 2 or len(b) < 2:
        return result
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    result["interval"] = _interval(_resampled_means(first, rng) - _resampled_means(second, rng))
    if np.var(a) + np.var(b) > 0:
        test = stats.ttest_ind(a, b, equal_var=False)
        result.update(welch_t=float(test.statistic), p=float(test.pvalue))
    return result


def percentile(value: float, population: list[float]) -> float:
    """Share (%) of `population` below `value`, ties counted half."""
    below = sum(other < value for other in population) + 0.5 * sum(other == value for other in population)
    return 100.0 * below / len(population)


def percentile_interval(cell: list[float], population: list[list[float]], higher: bool = True) -> dict:
    """A cell's percentile among the population's cell means, with a bootstrap 95 % interval (the cell's seeds
    and the population's cells and seeds resampled); no interval for a population of one. `higher` False: a
    lower value is the better cell (an error), and the percentile counts the cells it is below."""
    share = percentile(_mean(cell), [_mean(other) for other in population])
    interval = None
    if len(population) > 1:
        rng = np.random.default_rng(BOOTSTRAP_SEED)
        draws = []
        for _ in range(BOOTSTRAP_DRAWS // 4):
            own = float(np.mean(rng.choice(cell, size=len(cell))))
            picked = rng.integers(len(population), size=len(population))
            others = [float(np.mean(rng.choice(population[k], size=len(population[k])))) for k in picked]
            draws.append(percentile(own, others))
        interval = _interval(np.array(draws))
    if higher:
        return {"percentile": share, "interval": interval}
    return {"percentile": 100.0 - share, "interval": None if interval is None else [100.0 - interval[1],
                                                                                     100.0 - interval[0]]}


def variance_components(cells: list[list[float]]) -> dict | None:
    """One-way random-effects ANOVA: variance between cells and between seeds of one cell, and the share of the
    total due to the cell. None without at least two cells of which one has two seeds."""
    cells = [cell for cell in cells if cell]
    n = sum(len(cell) for cell in cells)
    k = len(cells)
    if k < 2 or n - k < 1:
        return None
    grand = _mean([value for cell in cells for value in cell])
    between = sum(len(cell) * (_mean(cell) - grand) ** 2 for cell in cells) / (k - 1)
    within = sum((value - _mean(cell)) ** 2 for cell in cells for value in cell) / (n - k)
    # The mean seeds per cell, corrected for unequal counts.
    n0 = (n - sum(len(cell) ** 2 for cell in cells) / n) / (k - 1)
    cell_variance = max(0.0, (between - within) / n0)
    total = cell_variance + within
    return {"seed_std": math.sqrt(within), "cell_std": math.sqrt(cell_variance),
            "cell_share": cell_variance / total if total > 0 else None, "cells": k, "runs": n}


def kendall_tau(estimates: list[float], truth: list[float]) -> dict:
    """Kendall's tau-b of the estimates against the truth, with a bootstrap 95 % interval over the cells; None
    for fewer than three cells or when either side is constant."""
    from scipy import stats

    result: dict = {"tau": None, "interval": None, "cells": len(truth)}
    if len(truth) < 3 or len(set(estimates)) < 2 or len(set(truth)) < 2:
        return result
    result["tau"] = float(stats.kendalltau(estimates, truth).statistic)
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    x, y = np.asarray(estimates), np.asarray(truth)
    draws = []
    for _ in range(BOOTSTRAP_DRAWS // 4):
        picked = rng.integers(len(x), size=len(x))
        if len(set(x[picked])) > 1 and len(set(y[picked])) > 1:
            draws.append(stats.kendalltau(x[picked], y[picked]).statistic)
    if draws:
        result["interval"] = _interval(np.array(draws))
    return result


# When a study answers its question: the searched cells better than the random ones at this significance, or the
# difference bounded to +- this half-width (in the metric's points), or each searched cell's percentile among the
# random cells known to within this width (a quartile).
SIGNIFICANCE = 0.05
DIFFERENCE_HALF_WIDTH = 4.0
PERCENTILE_WIDTH = 25.0


def cells_to_bound(searched_std: float | None, random_std: float | None,
                   half_width: float = DIFFERENCE_HALF_WIDTH) -> int | None:
    """Cells per group (as many searched as random) for a 95 % interval of the difference of the group means
    within +- half_width, by the normal approximation with the groups' measured spread between cells."""
    if searched_std is None or random_std is None:
        return None
    return max(2, math.ceil((1.96 / half_width) ** 2 * (searched_std ** 2 + random_std ** 2)))


def study_answer(comparison: dict | None, percentiles: dict[str, dict], higher: bool,
                 spreads: tuple[float | None, float | None] = (None, None)) -> dict:
    """Which of the three ways of answering the study's question hold. `comparison` is searched - random
    (compare_groups), `percentiles` each searched cell's percentile_interval, `higher` whether a larger value
    is the better cell, `spreads` the searched and random groups' sd between cells (for the size a study needs
    to bound the difference). A figure the study lacks (no interval, no p) answers nothing."""
    comparison = comparison or {}
    difference = comparison.get("difference")
    better = difference is not None and (difference > 0 if higher else difference < 0)
    p = comparison.get("p")
    interval = comparison.get("interval")
    half_width = (interval[1] - interval[0]) / 2 if interval else None
    widths = {name: (result["interval"][1] - result["interval"][0]) if result.get("interval") else None
              for name, result in percentiles.items()}
    shows = better and p is not None and p < SIGNIFICANCE
    bounds = half_width is not None and half_width < DIFFERENCE_HALF_WIDTH
    placed = bool(widths) and all(width is not None and width <= PERCENTILE_WIDTH for width in widths.values())
    return {"shows_searched_better": shows, "p": p, "difference_half_width": half_width,
            "bounds_difference": bounds, "percentile_widths": widths, "places_each_searched_cell": placed,
            "answered": shows or bounds or placed, "cells_per_group_to_bound": cells_to_bound(*spreads)}
