"""Row 2: one search step (architecture step on a `val` batch, then weight step on a `train` batch).

Three networks with the same weights, each stepped by the project's trainer: full mode; full mode with the
published mixed op swapped in (every operation, `none` included, and an `.item()` on every edge weight); and
single-path mode. The losses of one fixed Gumbel sample show that they compute the same thing.
"""
from __future__ import annotations

import copy
import math
from typing import Callable

import torch

from benchmarks.common import (
    NetworkSize, Row, available_memory_bytes, bytes_text, experiment_config, interleaved_medians, peak_memory_of,
    seconds_text, seeded, trainer_for,
)
from functions.optimisers import adam
from functions.trainer import ArchitectureStep, Trainer
from models.search_network import MixedOp, SearchNetwork


PAPER = NetworkSize.from_config("exps/search.yaml", repetitions=3)
QUICK = NetworkSize(channels=4, layers=3, batch=2, frames=48, classes=10, repetitions=1)


class PublishedMixedOp(MixedOp):
    """The published edge: every operation runs, `none` included, and each weight is read on the host."""

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        output = 0
        for index, op in enumerate(self._ops):
            weight = weights[index].item()
            if weight != 0 and math.isnan(weight):
                raise OverflowError(f"weight: {weights}")
            output += weights[index] * op(x)
        return output


def with_published_edges(network: SearchNetwork) -> SearchNetwork:
    reference = copy.deepcopy(network)
    for module in reference.modules():
        if isinstance(module, MixedOp):
            module.__class__ = PublishedMixedOp  # same parameters and buffers, the published forward
    return reference


def search_trainer(network: SearchNetwork, device: str) -> Trainer:
    """The optimisers of search.py (exps/search.yaml) around the project's trainer; on CUDA with TRAIN.AMP on."""
    cfg = experiment_config("exps/search.yaml", amp=device == "cuda")
    architecture = torch.optim.Adam(network.arch_parameters(), lr=cfg.TRAIN.ARCH_LR,
                                    betas=(cfg.TRAIN.ARCH_BETA1, cfg.TRAIN.ARCH_BETA2), weight_decay=cfg.TRAIN.ARCH_WD)
    return trainer_for(cfg, network, adam(cfg, network.weight_parameters()), ArchitectureStep(None, architecture),
                       device)


def search_step(trainer: Trainer, batches: list[torch.Tensor]) -> Callable[[], None]:
    """The trainer's own two steps (those of its loop), so that the row times the shipped code."""
    val_inputs, val_targets, train_inputs, train_targets = batches

    def step() -> None:
        trainer._architecture_step(val_inputs, val_targets)
        trainer._weight_step(train_inputs, train_targets)

    return step


def search_rows(size: NetworkSize, device: str = "cpu") -> list[Row]:
    torch.manual_seed(0)
    full = SearchNetwork(size.channels, size.classes, size.layers, "s2", single_path=False)
    sample = full.sample_cell_weights(torch.Generator().manual_seed(7)).detach().to(device)
    full.to(device)
    published = with_published_edges(full)
    single = copy.deepcopy(full)
    single.single_path = True
    networks = {"published": published, "full": full, "single": single}
    trainers = {name: search_trainer(network, device) for name, network in networks.items()}

    inputs = torch.randn(size.batch, size.frames, 257, device=device)
    targets = torch.randint(0, size.classes, (size.batch,), device=device)
    with torch.no_grad():
        losses = {name: float(trainers[name].criterion(network(inputs, sample), targets))
                  for name, network in networks.items()}

    batches = [torch.randn(size.batch, size.frames, 257, device=device),
               torch.randint(0, size.classes, (size.batch,), device=device),
               torch.randn(size.batch, size.frames, 257, device=device),
               torch.randint(0, size.classes, (size.batch,), device=device)]
    seconds = interleaved_medians({name: seeded(search_step(trainer, batches)) for name, trainer in trainers.items()},
                                  size.repetitions)
    config = f"C {size.channels}, {size.layers} layers, batch {size.batch}, {size.frames}x257, s2"
    if device == "cuda":
        config += ", AMP"
    full_vs_published = seconds["published"] / seconds["full"]
    single_vs_full = seconds["full"] / seconds["single"]
    # cuDNN may pick other algorithms (and TF32) for the three networks' convolutions.
    tolerance = 1e-5 if device == "cpu" else 1e-3
    same_published = math.isclose(losses["published"], losses["full"], rel_tol=tolerance)
    same_single = math.isclose(losses["single"], losses["full"], rel_tol=tolerance)
    return [
        Row(f"Search step, full mode vs the published mixed op ({config})",
            seconds_text(seconds["full"]), seconds_text(seconds["published"]), full_vs_published,
            ">= 0.95x (no slower, within timing noise)", full_vs_published >= 0.95 and same_published,
            f"loss of one fixed sample: {losses['full']:.6f} vs {losses['published']:.6f}"),
        Row(f"Search step, single-path vs full mode ({config})",
            seconds_text(seconds["single"]), seconds_text(seconds["full"]), single_vs_full,
            ">= 3x", single_vs_full >= 3.0 and same_single,
            f"loss of the same sample: {losses['single']:.6f} vs {losses['full']:.6f}"),
    ]


# The paper's search: 50 epochs over VoxCeleb1's identification training partition.
VOXCELEB1_TRAIN_UTTERANCES = 138_361
PAPER_SEARCH_EPOCHS = 50
COST_BATCHES = (2, 16, 64)


def predicted_search_seconds(step_seconds: float, global_batch: int) -> float:
    """Wall time of the paper's search from one step's time: steps per epoch x 50 epochs x step time."""
    return VOXCELEB1_TRAIN_UTTERANCES // global_batch * PAPER_SEARCH_EPOCHS * step_seconds


def duration_text(seconds: float) -> str:
    days = seconds / 86_400
    return f"{days:,.1f} days" if days >= 1 else f"{seconds / 3600:.1f} h"


def search_cost_rows(size: NetworkSize, device: str = "cpu", batches: tuple[int, ...] = COST_BATCHES) -> list[Row]:
    """Time of one search step per mode and batch, and the predicted wall time of the paper's 50-epoch search.
    Reference of each row: the same mode at the published batch 2, so the ratio is how many times sooner the
    whole search ends at that batch (learning-rate scaling aside: it changes no step's cost).

    Each batch's first step is untimed (the warm-up) and measures the step's peak memory above what was in use
    before it. That grows with the batch: a larger batch that would not fit in the memory left, by the growth per
    item of the last batch measured, is not run (its row says how much it would need) rather than sending the
    machine into swap."""
    rows = []
    config = f"C {size.channels}, {size.layers} layers, {size.frames}x257, s2" + (", AMP" if device == "cuda" else "")
    for single_path in (False, True):
        mode = "single-path" if single_path else "full mode"
        base = batches[0]
        seconds, growth_per_item = {}, 0.0
        for batch in batches:
            needed = growth_per_item * batch
            available = available_memory_bytes(device)
            if batch != base and needed > 0.9 * available:
                rows.append(Row(
                    f"Search cost, {mode}, batch {batch} ({config})", "not measured", f"{seconds_text(seconds[base])} "
                    f"(batch {base})", None, "none set (reported)", None,
                    f"a step would need about {bytes_text(needed)} more than the network and data (growing with the "
                    f"batch from the batches measured); {bytes_text(available)} available here",
                ))
                continue
            torch.manual_seed(0)
            network = SearchNetwork(size.channels, size.classes, size.layers, "s2", single_path=single_path).to(device)
            step = seeded(search_step(search_trainer(network, device), [
                torch.randn(batch, size.frames, 257, device=device),
                torch.randint(0, size.classes, (batch,), device=device),
                torch.randn(batch, size.frames, 257, device=device),
                torch.randint(0, size.classes, (batch,), device=device)]))
            before, peak = peak_memory_of(step, device)
            growth_per_item = (peak - before) / batch
            seconds[batch] = interleaved_medians({"step": step}, size.repetitions, warmup=0)["step"]
            predicted = predicted_search_seconds(seconds[batch], batch)
            rows.append(Row(
                f"Search cost, {mode}, batch {batch} ({config})", seconds_text(seconds[batch]),
                f"{seconds_text(seconds[base])} (batch {base})",
                predicted_search_seconds(seconds[base], base) / predicted, "none set (reported)", None,
                f"paper's search: {VOXCELEB1_TRAIN_UTTERANCES // batch:,} steps/epoch x {PAPER_SEARCH_EPOCHS} epochs "
                f"x step time = {duration_text(predicted)} on this machine",
            ))
    return rows
