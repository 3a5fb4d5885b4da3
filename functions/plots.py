"""Pictures of results: DET curve, score histograms, architecture weights."""
from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from models.visualize import state_label
from utils.files import write_atomically

_DET_TICKS = [0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4]


def new_figure(**options) -> Figure:
    """A figure drawn by Agg, without pyplot: no global figure registry to close, and pyplot's import (about a
    second on a 2-core CPU) is not paid at the start of every script."""
    figure = Figure(**options)
    FigureCanvasAgg(figure)
    return figure


def save_figure(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=120, bbox_inches="tight")
    write_atomically(path, lambda handle: handle.write(buffer.getvalue()))


def _probit(rates):
    """Normal deviates of rates, clipped away from 0 and 1; scipy.stats is imported here as it is slow to load."""
    from scipy.stats import norm

    return norm.ppf(np.clip(rates, 1e-4, 1 - 1e-4))


def plot_det_curve(scores: np.ndarray, labels: np.ndarray, eer: float, path: Path, title: str = "DET curve") -> None:
    """Miss rate against false-alarm rate on normal-deviate axes, with the EER point marked."""
    # sklearn takes a second to import; only evaluation draws this picture.
    from sklearn.metrics import det_curve

    fpr, fnr, _ = det_curve(labels, scores)
    figure = new_figure(figsize=(5, 5))
    axes = figure.subplots()
    axes.plot(_probit(fpr), _probit(fnr), label="system")
    axes.plot(_probit(eer), _probit(eer), "o", label=f"EER {100 * eer:.2f} %")
    axes.plot([-4, 4], [-4, 4], ":", color="grey", linewidth=0.8)
    ticks = _probit(_DET_TICKS)
    labels_text = [f"{100 * t:g}" for t in _DET_TICKS]
    axes.set_xticks(ticks, labels_text)
    axes.set_yticks(ticks, labels_text)
    limit = _probit([0.0008, 0.5])
    axes.set_xlim(*limit)
    axes.set_ylim(*limit)
    axes.set_xlabel("False alarm rate (%)")
    axes.set_ylabel("Miss rate (%)")
    axes.set_title(title)
    axes.grid(True, linewidth=0.4)
    axes.legend(loc="upper right")
    save_figure(figure, path)


def plot_score_histograms(scores: np.ndarray, labels: np.ndarray, path: Path, title: str = "Trial scores") -> None:
    figure = new_figure(figsize=(6, 4))
    axes = figure.subplots()
    bins = np.linspace(float(scores.min()), float(scores.max()), 60)
    axes.hist(scores[labels == 1], bins=bins, alpha=0.6, density=True, label="target")
    axes.hist(scores[labels == 0], bins=bins, alpha=0.6, density=True, label="non-target")
    axes.set_xlabel("cosine score")
    axes.set_ylabel("density")
    axes.set_title(title)
    axes.legend()
    save_figure(figure, path)


def architecture_weights_figure(
    weights: dict[str, np.ndarray], op_names: dict[str, Sequence[Sequence[str]]], title: str
) -> Figure:
    """Heat maps of the softmax of the architecture parameters, one per cell: a row per edge, a column per
    operation, one colour scale for all. The constrained layout keeps the labels, titles and the colour bar apart
    at any number of operations."""
    columns = max(values.shape[1] for values in weights.values())
    rows = max(values.shape[0] for values in weights.values())
    figure = new_figure(figsize=(len(weights) * (1.4 + (0.55 if columns > 2 else 0.9) * columns) + 1.2, 1.8 + 0.32 * rows),
                    layout="constrained")
    all_axes = figure.subplots(1, len(weights), squeeze=False)
    top = max(float(values.max()) for values in weights.values())
    for axes, (cell, values) in zip(all_axes[0], weights.items()):
        image = axes.imshow(values, cmap="viridis", vmin=0.0, vmax=top, aspect="auto")
        names = op_names[cell]
        same_ops_on_every_edge = all(list(row) == list(names[0]) for row in names)
        if same_ops_on_every_edge:
            axes.set_xticks(range(len(names[0])), names[0], rotation=60, ha="right", rotation_mode="anchor")
        else:  # each edge has its own operations (s1): each square names its own
            axes.set_xticks(range(values.shape[1]), [f"op {i}" for i in range(values.shape[1])])
        axes.set_yticks(range(values.shape[0]), [edge_label(i) for i in range(values.shape[0])])
        for (row, col), value in np.ndenumerate(values):
            text = f"{value:.2f}" if same_ops_on_every_edge else f"{names[row][col]}\n{value:.2f}"
            axes.text(col, row, text, ha="center", va="center", fontsize=6,
                      color="black" if value > 0.6 * top else "white")
        axes.set_title(f"{cell} cell")
    figure.colorbar(image, ax=all_axes[0].tolist(), fraction=0.05, pad=0.02, label="softmax(alpha)")
    figure.suptitle(title)
    return figure


def plot_architecture_weights(
    weights: dict[str, np.ndarray], op_names: dict[str, Sequence[Sequence[str]]], path: Path, title: str
) -> None:
    save_figure(architecture_weights_figure(weights, op_names, title), path)


def edge_label(edge: int) -> str:
    """'input -> node' for edge `edge` of a 4-node cell (edges are numbered node by node), with the states named
    as the cell diagrams name them."""
    node, start = 0, 0
    while edge >= start + node + 2:
        start += node + 2
        node += 1
    return f"{state_label(edge - start)} → {state_label(node + 2)}"


def plot_study(panels: dict[str, dict[str, list[float]]], path: Path, title: str) -> None:
    """One panel per metric: each origin's cells as points, with their mean and ± one standard deviation (the
    mean alone for an origin of one cell)."""
    figure = new_figure(figsize=(4.5 * len(panels), 4))
    all_axes = figure.subplots(1, len(panels), squeeze=False)
    for axes, (metric, by_origin) in zip(all_axes[0], panels.items()):
        for position, (origin, values) in enumerate(by_origin.items()):
            # A fixed, small horizontal spread so that equal values stay visible.
            offsets = np.linspace(-0.12, 0.12, len(values)) if len(values) > 1 else np.zeros(1)
            axes.plot(position + offsets, values, "o", alpha=0.7, label=f"{origin} ({len(values)})")
            spread = float(np.std(values, ddof=1)) if len(values) > 1 else None
            axes.errorbar(position + 0.3, float(np.mean(values)), yerr=spread, fmt="_", markersize=14, capsize=4,
                          color="black")
        axes.set_xticks(range(len(by_origin)), list(by_origin))
        axes.set_xlim(-0.5, len(by_origin) - 0.3)
        axes.set_ylabel(metric)
        axes.grid(True, axis="y", linewidth=0.4)
    figure.suptitle(f"{title}; bars: mean ± standard deviation")
    save_figure(figure, path)


_DIAGNOSTIC_PANELS = (("arch_spread", "mean over edges of max - min softmax(alpha)"),
                      ("arch_move", "max |change of alpha| / (steps x lr)"),
                      ("arch_changed", "edges whose best operation changed"))


def plot_search_diagnostics(searches: dict[str, list[dict]] | list[dict], path: Path, title: str,
                            agreement: list[dict] | None = None) -> None:
    """Per epoch, for each search (its `architecture.jsonl` rows) and both cells: the spread of the weights, how
    far they moved against steps x lr, the edges that changed their best operation; with `agreement` (rows of
    epoch, edges, operations) a panel of the searches' agreement."""
    if isinstance(searches, list):
        searches = {"": searches}
    panels = len(_DIAGNOSTIC_PANELS) + (agreement is not None)
    figure = new_figure(figsize=(4.2 * panels, 3.6))
    all_axes = figure.subplots(1, panels, squeeze=False)[0]
    for axes, (key, label) in zip(all_axes, _DIAGNOSTIC_PANELS):
        for name, rows in searches.items():
            for cell, style in (("normal", "-o"), ("reduce", "--s")):
                points = [(row["epoch"], row[f"{key}_{cell}"]) for row in rows if f"{key}_{cell}" in row]
                if points:
                    epochs, values = zip(*points)
                    axes.plot(epochs, values, style, markersize=3, label=f"{name} {cell}".strip())
        axes.set_title(label, fontsize=8)
        axes.set_xlabel("epoch")
        axes.grid(True, linewidth=0.4)
    if agreement is not None:
        axes = all_axes[-1]
        for key in ("edges", "operations"):
            axes.plot([row["epoch"] for row in agreement], [row[key] for row in agreement], "-o", markersize=3,
                      label=key)
        axes.set_ylim(0, 1.05)
        axes.set_title("agreement across search seeds", fontsize=8)
        axes.set_xlabel("epoch")
        axes.grid(True, linewidth=0.4)
    for axes in all_axes:
        if axes.get_legend_handles_labels()[0]:
            axes.legend(fontsize=6)
    figure.suptitle(title)
    save_figure(figure, path)
