"""Draw a genotype's normal and reduction cells as PNG diagrams (matplotlib only).

    python -m models.visualize GENOTYPE_TEXT_OR_FILE_OR_CHECKPOINT OUT_PREFIX

writes OUT_PREFIX_normal.png and OUT_PREFIX_reduce.png. Each diagram shows the cell inputs c_{k-2} and
c_{k-1} on the left, the four intermediate nodes, each operation as a labelled arrow, and the cell output c_{k}
on the right collecting the concatenated nodes.
"""
from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

from models.genotypes import Genotype, GenotypeError, load_genotype
from utils.checkpoint import CheckpointError
from utils.cli import OneLineErrorParser

INPUT_COLOUR, NODE_COLOUR, OUTPUT_COLOUR = "#8fbc8f", "#add8e6", "#eee8aa"
OP_COLOURS = {"sep": "#1f4e9c", "dil": "#2e7d32", "max": "#b23b3b", "avg": "#b8661c", "skip": "#555555"}
BOX_WIDTH, BOX_HEIGHT = 1.5, 0.9
OUTPUT = "output"
# Centres, in data units, of the cell's states (0, 1: inputs; 2..5: nodes) and of its output.
POSITIONS: dict[int | str, tuple[float, float]] = {
    0: (0.0, 2.8), 1: (0.0, -2.8), 2: (3.6, 1.6), 3: (7.2, -1.6), 4: (10.8, 1.6), 5: (14.4, -1.6), OUTPUT: (17.6, 0.0)
}
# Curvatures tried for an edge, least bent first; the first whose curve misses every other box is drawn.
CURVATURES = (0.0, -0.15, 0.15, -0.3, 0.3, -0.45, 0.45, -0.6, 0.6)
# Where along its edge a label may sit, tried in order until it overlaps no box and no other label.
LABEL_SPOTS = (0.5, 0.4, 0.6, 0.3, 0.7, 0.22, 0.78)
# Approximate size of a label in data units at the font size used (per character, and its height).
CHAR_WIDTH, LABEL_HEIGHT = 0.13, 0.42

Point = tuple[float, float]
Rectangle = tuple[float, float, float, float]


def state_label(state: int | str) -> str:
    """How a diagram names a cell state: the inputs $c_{k-2}$ and $c_{k-1}$ (mathtext), the nodes 0..3, the output
    $c_{k}$."""
    if state == OUTPUT:
        return "$c_{k}$"
    return ("$c_{k-2}$", "$c_{k-1}$")[state] if state < 2 else str(state - 2)


def _op_colour(op: str) -> str:
    return OP_COLOURS.get(op.split("_")[0], "#000000")


def _box_rectangle(centre: Point, margin: float = 0.0) -> Rectangle:
    x, y = centre
    half_width, half_height = BOX_WIDTH / 2 + margin, BOX_HEIGHT / 2 + margin
    return x - half_width, y - half_height, x + half_width, y + half_height


def _inside(point: Point, rectangle: Rectangle) -> bool:
    x, y = point
    return rectangle[0] <= x <= rectangle[2] and rectangle[1] <= y <= rectangle[3]


def _overlap(first: Rectangle, second: Rectangle) -> bool:
    return first[0] < second[2] and second[0] < first[2] and first[1] < second[3] and second[1] < first[3]


def _curve_point(start: Point, end: Point, rad: float, t: float) -> Point:
    """A point of matplotlib's arc3 curve; with equal axis aspect, data units behave as display units."""
    (x1, y1), (x2, y2) = start, end
    control = ((x1 + x2) / 2 + rad * (y2 - y1), (y1 + y2) / 2 - rad * (x2 - x1))
    a, b, c = (1 - t) ** 2, 2 * (1 - t) * t, t**2
    return a * x1 + b * control[0] + c * x2, a * y1 + b * control[1] + c * y2


def _curve_samples(source: int | str, target: int | str, rad: float) -> list[Point]:
    return [_curve_point(POSITIONS[source], POSITIONS[target], rad, step / 60) for step in range(1, 60)]


def _route(source: int | str, target: int | str, taken: set[tuple[int | str, int | str, float]]) -> float:
    """The least bent curvature from source to target that passes no other box and is not already used."""
    obstacles = [_box_rectangle(centre, 0.2) for key, centre in POSITIONS.items() if key not in (source, target)]
    for rad in CURVATURES:
        if (source, target, rad) in taken:
            continue
        if not any(_inside(point, box) for point in _curve_samples(source, target, rad) for box in obstacles):
            return rad
    return next(rad for rad in CURVATURES if (source, target, rad) not in taken)


def _label_spot(
    curve: list[Point], text: str, placed: list[Rectangle], other_curves: list[list[Point]]
) -> Point:
    """A spot on `curve` where the label covers no box, no placed label and, if possible, no other edge."""
    half_width, half_height = (CHAR_WIDTH * len(text) + 0.2) / 2, LABEL_HEIGHT / 2
    boxes = [_box_rectangle(centre, 0.05) for centre in POSITIONS.values()]
    crossing_an_edge = []
    for t in LABEL_SPOTS:
        x, y = curve[round(t * (len(curve) - 1))]
        rectangle = (x - half_width, y - half_height, x + half_width, y + half_height)
        if any(_overlap(rectangle, other) for other in boxes + placed):
            continue
        if not any(_inside(point, rectangle) for other in other_curves for point in other):
            chosen = rectangle
            break
        crossing_an_edge.append(rectangle)
    else:
        if not crossing_an_edge:
            return curve[len(curve) // 2]
        chosen = crossing_an_edge[0]
    placed.append(chosen)
    return (chosen[0] + chosen[2]) / 2, (chosen[1] + chosen[3]) / 2


def _draw_box(axes: Axes, centre: Point, label: str, colour: str) -> FancyBboxPatch:
    x, y = centre
    box = FancyBboxPatch(
        (x - BOX_WIDTH / 2, y - BOX_HEIGHT / 2),
        BOX_WIDTH,
        BOX_HEIGHT,
        boxstyle="round,pad=0.05,rounding_size=0.2",
        facecolor=colour,
        edgecolor="black",
        linewidth=1.2,
        zorder=3,
    )
    axes.add_patch(box)
    axes.text(x, y, label, ha="center", va="center", fontsize=14, zorder=4)
    return box


def plot_cell(genotype_cell: Sequence[tuple[str, int]], concat: Sequence[int], path: str | Path, title: str) -> Path:
    """Draw one cell (8 (operation, input) pairs and its concat nodes) to the PNG file `path`."""
    figure = Figure(figsize=(14, 6.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.01, 0.01, 0.98, 0.9))
    axes.set_aspect("equal")
    axes.axis("off")
    axes.set_xlim(-1.2, 18.8)
    axes.set_ylim(-4.4, 4.4)
    figure.suptitle(title, fontsize=16)

    labels = {key: state_label(key) for key in POSITIONS}
    colours = {0: INPUT_COLOUR, 1: INPUT_COLOUR, OUTPUT: OUTPUT_COLOUR}
    boxes = {
        key: _draw_box(axes, centre, labels[key], colours.get(key, NODE_COLOUR)) for key, centre in POSITIONS.items()
    }

    taken: set[tuple[int | str, int | str, float]] = set()
    edges = []
    for position, (op, source) in enumerate(genotype_cell):
        target = 2 + position // 2
        rad = _route(source, target, taken)
        taken.add((source, target, rad))
        edges.append((op, source, target, rad))
    concat_edges = [(state, _route(state, OUTPUT, taken)) for state in concat]
    curves = [_curve_samples(source, target, rad) for _, source, target, rad in edges]
    curves += [_curve_samples(state, OUTPUT, rad) for state, rad in concat_edges]

    placed_labels: list[Rectangle] = []
    for index, (op, source, target, rad) in enumerate(edges):
        colour = _op_colour(op)
        axes.add_patch(FancyArrowPatch(
            POSITIONS[source], POSITIONS[target], patchA=boxes[source], patchB=boxes[target],
            connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=16, color=colour, linewidth=1.5,
            zorder=2,
        ))
        other_curves = curves[:index] + curves[index + 1 :]
        label_x, label_y = _label_spot(curves[index], op, placed_labels, other_curves)
        axes.text(label_x, label_y, op, ha="center", va="center", fontsize=11, color=colour, zorder=5,
                  bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.9})

    for state, rad in concat_edges:
        axes.add_patch(FancyArrowPatch(
            POSITIONS[state], POSITIONS[OUTPUT], patchA=boxes[state], patchB=boxes[OUTPUT],
            connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>", mutation_scale=14, color="#999999", linewidth=1.2,
            linestyle="--", zorder=1,
        ))

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path


def plot_genotype(genotype: Genotype, out_prefix: str | Path) -> list[Path]:
    """Write `<out_prefix>_normal.png` and `<out_prefix>_reduce.png`; return their paths."""
    return [
        plot_cell(genotype.normal, genotype.normal_concat, f"{out_prefix}_normal.png", "normal cell"),
        plot_cell(genotype.reduce, genotype.reduce_concat, f"{out_prefix}_reduce.png", "reduction cell"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = OneLineErrorParser(prog="python -m models.visualize", description=__doc__.splitlines()[0])
    parser.add_argument("genotype", help="genotype text, a file holding it, or a checkpoint with a 'genotype'")
    parser.add_argument("out_prefix", help="writes OUT_PREFIX_normal.png and OUT_PREFIX_reduce.png")
    args = parser.parse_args(argv)
    try:
        paths = plot_genotype(load_genotype(args.genotype), args.out_prefix)
    except (GenotypeError, CheckpointError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
