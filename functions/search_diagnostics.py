"""Is the search moving, and in a consistent direction? Per-epoch figures of the architecture weights.

The normalised entropy of softmax(alpha) cannot tell weights that did not move from weights that moved twenty
times their initial spread: near the uniform distribution it falls with the square of the change, so it reads
1.0000 in both cases. These figures are linear in the change instead:

- spread: each edge's max - min of its softmax weights (0 for uniform weights; 1e-3 * N(0, 1) initial alphas
  give about 0.001 with 8 operations);
- move: the largest change of an alpha over the epoch divided by (architecture steps x architecture learning
  rate). Adam moves a parameter by at most about its learning rate per step, so 1 means every step pushed that
  alpha the same way, and a value near 0 means the steps cancelled out;
- changed: the edges whose best operation differs from the previous epoch's;
- agreement, across searches of different seeds (the study): the share of the derived cells' edges (node and
  input) and of their operations on which two searches agree, averaged over the pairs.
"""
from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch

from models.genotypes import Genotype

CELLS = ("normal", "reduce")
DIAGNOSTICS_FILE = "architecture.jsonl"


def edge_spread(alphas: torch.Tensor) -> list[float]:
    """Each edge's max - min of its softmax weights."""
    weights = torch.softmax(alphas.detach().double(), dim=-1)
    return (weights.max(dim=-1).values - weights.min(dim=-1).values).tolist()


def epoch_diagnostics(alphas: dict[str, torch.Tensor], previous: dict[str, torch.Tensor],
                      initial: dict[str, torch.Tensor], steps: int, total_steps: int, lr: float) -> dict:
    """The figures of one epoch: `alphas` now, at the epoch's start (`previous`) and before the first step
    (`initial`), per cell; `steps` architecture steps this epoch, `total_steps` in all, at learning rate `lr`."""
    row: dict = {"arch_steps": total_steps}
    edges: dict = {}
    for cell in CELLS:
        now, before, start = (tensor.detach().double().cpu() for tensor in (alphas[cell], previous[cell],
                                                                              initial[cell]))
        spread = edge_spread(now)
        row[f"arch_spread_{cell}"] = sum(spread) / len(spread)
        row[f"arch_spread_max_{cell}"] = max(spread)
        row[f"arch_changed_{cell}"] = int((now.argmax(-1) != before.argmax(-1)).sum())
        if steps:
            row[f"arch_move_{cell}"] = float((now - before).abs().max()) / (steps * lr)
        if total_steps:
            row[f"arch_move_total_{cell}"] = float((now - start).abs().max()) / (total_steps * lr)
        edges[cell] = {"spread": spread, "best": now.argmax(-1).tolist(), "alphas": now.tolist()}
    return {"row": row, "edges": edges}


def append_diagnostics(path: Path, epoch: int, diagnostics: dict) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps({"epoch": epoch, **diagnostics["row"], "edges": diagnostics["edges"]}) + "\n")


def read_diagnostics(path: Path) -> list[dict]:
    """The rows of `architecture.jsonl`, one per epoch: a run stopped and resumed may have written an epoch twice,
    and the later row is the one its history keeps."""
    if not path.exists():
        return []
    rows = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            rows[row["epoch"]] = row
    return [rows[epoch] for epoch in sorted(rows)]


def _choices(genotype: Genotype) -> dict[str, list[tuple[int, int, str]]]:
    """Per cell: the (node, input, operation) of each of its 8 edges."""
    return {cell: [(position // 2, source, op) for position, (op, source) in enumerate(gene)]
            for cell, gene in (("normal", genotype.normal), ("reduce", genotype.reduce))}


def genotype_agreement(first: Genotype, second: Genotype) -> dict[str, float]:
    """Shares of the derived edges (node, input) and of the edges with their operation that two cells share."""
    a, b = _choices(first), _choices(second)
    shared_edges = shared_ops = total = 0
    for cell in CELLS:
        edges_a = {(node, source) for node, source, _ in a[cell]}
        edges_b = {(node, source) for node, source, _ in b[cell]}
        shared_edges += len(edges_a & edges_b)
        shared_ops += len(set(a[cell]) & set(b[cell]))
        total += len(a[cell])
    return {"edges": shared_edges / total, "operations": shared_ops / total}


def mean_agreement(genotypes: list[Genotype]) -> dict[str, float] | None:
    """`genotype_agreement` averaged over every pair; None for fewer than two cells."""
    pairs = [genotype_agreement(a, b) for a, b in itertools.combinations(genotypes, 2)]
    if not pairs:
        return None
    return {key: sum(pair[key] for pair in pairs) / len(pairs) for key in ("edges", "operations")}
