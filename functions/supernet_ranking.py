"""The search's own estimate of cells it did not derive: how it would rank the study's random cells.

Two estimates per cell, from a finished search's last checkpoint: the supernet's log-probability of the cell
under its final architecture weights (the sum, over the cell's 16 edges, of log softmax(alpha) of the edge's
operation), and the Top-1 of the supernet on the `val` partition with every edge fixed to the cell's operation
(the weights the cell inherits from the supernet, no training of its own). Ranked against the cells' stand-alone
Top-1 (the study), a search that can tell good cells from bad ones shows a positive Kendall tau.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from yacs.config import CfgNode

from functions.distributed import DistributedContext
from functions.evaluation import evaluate_identification
from functions.experiment import build_network, identification_test_set, model_state
from models.genotypes import Genotype
from models.search_network import SearchNetwork
from models.search_spaces import NUM_NODES
from utils.checkpoint import load_checkpoint, load_state_dict_strict


def _edges(gene: list[tuple[str, int]]) -> list[tuple[int, str]]:
    """(edge index, operation) of each of a cell's 8 chosen edges; edges are numbered node by node."""
    first_edge = [sum(2 + earlier for earlier in range(node)) for node in range(NUM_NODES)]
    return [(first_edge[position // 2] + source, op) for position, (op, source) in enumerate(gene)]


def fixed_cell_weights(network: SearchNetwork, genotype: Genotype) -> torch.Tensor:
    """[cells, 14, ops]: 1 on each edge the genotype uses, at its operation; 0 elsewhere."""
    weights = torch.zeros(len(network.cells), *network.alphas_normal.shape)
    for index, cell in enumerate(network.cells):
        gene = genotype.reduce if cell.reduction else genotype.normal
        edge_ops = network.space.edge_ops(cell.reduction)
        for edge, op in _edges(gene):
            weights[index, edge, list(edge_ops[edge]).index(op)] = 1.0
    return weights.to(network.alphas_normal.device)


def log_probability(network: SearchNetwork, genotype: Genotype) -> float:
    """Sum over the cell's edges of log softmax(alpha) of the edge's operation, normal and reduction cell."""
    total = 0.0
    for alphas, gene, edge_ops in ((network.alphas_normal, genotype.normal, network.space.normal),
                                   (network.alphas_reduce, genotype.reduce, network.space.reduce)):
        log_probs = F.log_softmax(alphas.detach().double().cpu(), dim=-1)
        total += sum(float(log_probs[edge, list(edge_ops[edge]).index(op)]) for edge, op in _edges(gene))
    return total


def supernet_estimates(search_run: Path, data_dir: str, genotypes: dict[str, Genotype]) -> dict[str, dict]:
    """Per named cell: its log-probability under the search's last architecture weights and its `val` Top-1 with
    the supernet's weights."""
    checkpoint = load_checkpoint(search_run / "Model" / "checkpoint_last.pth", map_location="cpu")
    cfg = CfgNode.load_cfg(checkpoint["config"])
    cfg.defrost()
    cfg.DATASET.DATA_DIR = data_dir
    cfg.freeze()
    state = model_state(checkpoint)
    device = torch.device("cuda" if cfg.DEVICE != "cpu" and torch.cuda.is_available() else "cpu")
    ctx = DistributedContext(rank=0, world_size=1, local_rank=0, device=device)
    network = build_network(cfg, ctx, state["classifier.weight"].shape[0], None)
    load_state_dict_strict(network, state)
    dataset = identification_test_set(cfg, "val")
    estimates = {}
    for name, genotype in genotypes.items():
        network.fixed_cell_weights = fixed_cell_weights(network, genotype)
        metrics = evaluate_identification(network, dataset, ctx, cfg.DATASET.NUM_WORKERS)
        estimates[name] = {"log_probability": log_probability(network, genotype), "val_top1": metrics["top1"]}
    network.fixed_cell_weights = None
    return estimates
