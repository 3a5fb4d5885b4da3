"""Random cells: the standard sanity check of architecture search (random cells of the same space, trained the
same way as the searched one).

Each intermediate node of each cell takes two distinct earlier states, uniformly, and on each of the two edges
a non-`none` operation, uniformly, from that edge's own candidates in the space (s1 lists them per edge).
"""
from __future__ import annotations

import random
from collections.abc import Sequence

from models.search_spaces import NUM_NODES, SearchSpace, get_search_space
from utils import Genotype

CONCAT = range(2, 2 + NUM_NODES)


def _random_cell(edge_ops: Sequence[Sequence[str]], rng: random.Random) -> list[tuple[str, int]]:
    gene = []
    first_edge = 0
    for node in range(NUM_NODES):
        num_inputs = 2 + node
        for input_index in sorted(rng.sample(range(num_inputs), 2)):
            candidates = [op for op in edge_ops[first_edge + input_index] if op != "none"]
            gene.append((rng.choice(candidates), input_index))
        first_edge += num_inputs
    return gene


def random_genotype(space: str | SearchSpace, seed: int) -> Genotype:
    """A cell drawn uniformly from `space`; the same seed gives the same cell on every platform."""
    space = get_search_space(space) if isinstance(space, str) else space
    # random.Random's Mersenne Twister and its sample/choice are specified, so the draw does not depend on torch.
    rng = random.Random(f"{space.name}:{seed}")
    return Genotype(
        normal=_random_cell(space.normal, rng),
        normal_concat=CONCAT,
        reduce=_random_cell(space.reduce, rng),
        reduce_concat=CONCAT,
    )
