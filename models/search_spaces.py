"""The search spaces: which operations compete on each of a cell's 14 edges.

The order of the names on an edge is the column order of the architecture parameters (alphas), so it must
not change: saved alphas and derived genotypes depend on it. Edges are numbered node by node: node 0 has edges
0-1 (from the two cell inputs), node 1 edges 2-4, node 2 edges 5-8, node 3 edges 9-13.
"""
from __future__ import annotations

from dataclasses import dataclass

NUM_NODES = 4
NUM_EDGES = sum(2 + node for node in range(NUM_NODES))

EdgeOps = tuple[str, ...]


@dataclass(frozen=True)
class SearchSpace:
    name: str
    normal: tuple[EdgeOps, ...]
    reduce: tuple[EdgeOps, ...]

    @property
    def num_ops(self) -> int:
        """Operations per edge; the same on every edge of both cell types in each space."""
        return len(self.normal[0])

    def edge_ops(self, reduction: bool) -> tuple[EdgeOps, ...]:
        return self.reduce if reduction else self.normal


def _uniform(name: str, ops: EdgeOps) -> SearchSpace:
    return SearchSpace(name, (ops,) * NUM_EDGES, (ops,) * NUM_EDGES)


_SKIP, _MAX, _AVG = "skip_connect", "max_pool_3x3", "avg_pool_3x3"
_SEP3, _DIL3, _DIL5 = "sep_conv_3x3", "dil_conv_3x3", "dil_conv_5x5"

S1 = SearchSpace(
    "s1",
    normal=(
        (_SKIP, _DIL3), (_SKIP, _DIL5), (_SKIP, _DIL5), (_SKIP, _SEP3), (_SKIP, _DIL3), (_MAX, _SKIP), (_SKIP, _SEP3),
        (_SKIP, _SEP3), (_SKIP, _DIL3), (_SKIP, _SEP3), (_MAX, _SKIP), (_SKIP, _DIL3), (_DIL3, _DIL5), (_DIL3, _DIL5),
    ),
    reduce=(
        (_MAX, _AVG), (_MAX, _DIL3), (_MAX, _AVG), (_MAX, _AVG), (_SKIP, _DIL5), (_MAX, _AVG), (_MAX, _SEP3),
        (_SKIP, _DIL3), (_SKIP, _DIL5), (_MAX, _AVG), (_MAX, _AVG), (_SKIP, _DIL5), (_SKIP, _DIL5), (_SKIP, _DIL5),
    ),
)

S2 = _uniform(
    "s2",
    ("none", _MAX, _AVG, _SKIP, _SEP3, "sep_conv_5x5", _DIL3, _DIL5),
)

S3 = _uniform(
    "s3",
    ("none", _MAX, _AVG, _SKIP, _SEP3, "sep_conv_3x1", "sep_conv_1x3", _DIL3, "dil_conv_3x1", "dil_conv_1x3"),
)

SEARCH_SPACES: dict[str, SearchSpace] = {space.name: space for space in (S1, S2, S3)}

# Every name a genotype may use: the union of all spaces' operations.
KNOWN_OPS: frozenset[str] = frozenset(
    op for space in SEARCH_SPACES.values() for edge in space.normal + space.reduce for op in edge
)


def get_search_space(name: str) -> SearchSpace:
    try:
        return SEARCH_SPACES[name]
    except KeyError:
        raise ValueError(f"unknown search space {name!r}; choose one of {', '.join(SEARCH_SPACES)}") from None
