"""The architecture-weights picture: nothing overlaps at any number of operations, states named as in the diagrams."""
from __future__ import annotations

import numpy as np
import pytest
from matplotlib.transforms import Bbox

from functions.plots import architecture_weights_figure, edge_label
from models.search_spaces import SEARCH_SPACES

EDGES = 14


def weights_and_names(columns: int, same_ops: bool = True):
    rng = np.random.default_rng(columns)
    weights, names = {}, {}
    for cell in ("normal", "reduce"):
        logits = rng.normal(size=(EDGES, columns))
        weights[cell] = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
        ops = tuple(f"operation_{i}x{i}" for i in range(columns))
        names[cell] = (ops,) * EDGES if same_ops else tuple(ops[e % columns:] + ops[: e % columns] for e in range(EDGES))
    return weights, names


def overlap(first: Bbox, second: Bbox) -> bool:
    return first.x0 < second.x1 and second.x0 < first.x1 and first.y0 < second.y1 and second.y0 < first.y1


@pytest.mark.parametrize("columns,same_ops", [(2, False), (5, True), (8, True), (10, True)])
def test_panels_colour_bar_and_title_do_not_overlap(columns, same_ops):
    figure = architecture_weights_figure(*weights_and_names(columns, same_ops), "softmax(alpha), epoch 3")
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    panels = [axes for axes in figure.axes if axes.get_label() != "<colorbar>"]
    bars = [axes for axes in figure.axes if axes.get_label() == "<colorbar>"]
    assert len(panels) == 2 and len(bars) == 1
    # Each box holds the panel with its tick labels and title, or the bar with its ticks and label.
    boxes = [axes.get_tightbbox(renderer) for axes in panels + bars]
    title = figure._suptitle.get_window_extent(renderer)
    canvas = figure.bbox
    for index, box in enumerate(boxes):
        assert canvas.x0 <= box.x0 and box.x1 <= canvas.x1 and canvas.y0 <= box.y0 and box.y1 <= canvas.y1
        assert not overlap(box, title)
        for other in boxes[index + 1:]:
            assert not overlap(box, other)


def test_edges_are_named_as_in_the_cell_diagrams():
    # Edges are numbered node by node: node 0 takes c_{k-2}, c_{k-1}; node 1 those and node 0; ...
    expected = ["$c_{k-2}$ → 0", "$c_{k-1}$ → 0", "$c_{k-2}$ → 1", "$c_{k-1}$ → 1", "0 → 1",
                "$c_{k-2}$ → 2", "$c_{k-1}$ → 2", "0 → 2", "1 → 2",
                "$c_{k-2}$ → 3", "$c_{k-1}$ → 3", "0 → 3", "1 → 3", "2 → 3"]
    assert [edge_label(edge) for edge in range(EDGES)] == expected


def test_every_search_space_draws_its_operation_names():
    for space in SEARCH_SPACES.values():
        names = {"normal": space.edge_ops(False), "reduce": space.edge_ops(True)}
        weights = {cell: np.full((EDGES, space.num_ops), 1 / space.num_ops) for cell in names}
        figure = architecture_weights_figure(weights, names, space.name)
        figure.canvas.draw()
        drawn = {text.get_text() for axes in figure.axes for text in axes.texts + axes.get_xticklabels()}
        assert all(any(op in text for text in drawn) for edge in names["reduce"] for op in edge), space.name
