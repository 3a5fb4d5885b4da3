"""Row 3: a training step of the paper's genotype network, through the project's trainer as shipped, against the
same network and optimiser stepped by the published loop (zero_grad, forward, loss, backward, step) without the
trainer's optimisations. Both start from the same weights; the first step's loss shows they compute the same
thing."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from benchmarks.common import (
    NetworkSize, Row, experiment_config, interleaved_medians, seconds_text, seeded, trainer_for,
)
from functions.optimisers import adam
from models.genotype_network import GenotypeNetwork
from models.genotypes import AUTOSPEECH


# The paper's network with a CPU-sized batch (the config's 96 would take minutes a step).
PAPER = NetworkSize.from_config("exps/scratch/scratch_iden.yaml", 3, "paper size", classes=1251, batch=8)
# The demo corpus has python -m data_objects.synthetic's default 24 + 8 speakers.
DEMO = NetworkSize.from_config("exps/demo/scratch_iden.yaml", 5, "demo size", classes=32)
QUICK = NetworkSize(8, 3, 4, 64, 10, 1, "quick", "exps/demo/scratch_iden.yaml")


def published_step(model: nn.Module, optimizer: torch.optim.Optimizer, criterion: nn.Module,
                   inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    optimizer.zero_grad()
    loss = criterion(model(inputs), targets)
    loss.backward()
    optimizer.step()
    return loss.detach()


def training_row(size: NetworkSize, device: str = "cpu") -> Row:
    """On CUDA, ours is the trainer with TRAIN.AMP on (bfloat16 autocast) against the plain float32 step."""
    cfg = experiment_config(size.config, amp=device == "cuda")
    torch.manual_seed(0)
    ours = GenotypeNetwork(size.channels, size.classes, size.layers, AUTOSPEECH).train().to(device)
    # Half-way through training: drop-path at half its final probability.
    ours.drop_path_prob = cfg.MODEL.DROP_PATH_PROB / 2
    plain = copy.deepcopy(ours)
    trainer = trainer_for(cfg, ours, adam(cfg, ours.parameters()), device=device)
    plain_optimizer = adam(cfg, plain.parameters())

    inputs = torch.randn(size.batch, size.frames, 257, device=device)
    targets = torch.randint(0, size.classes, (size.batch,), device=device)
    runs = {
        "plain": seeded(lambda: published_step(plain, plain_optimizer, trainer.criterion, inputs, targets)),
        "ours": seeded(lambda: trainer._weight_step(inputs, targets)[0]),  # the trainer's own step
    }
    first_losses = {name: float(run()) for name, run in runs.items()}
    seconds = interleaved_medians(runs, size.repetitions, warmup=0 if device == "cpu" else 2)
    ratio = seconds["plain"] / seconds["ours"]
    # bfloat16 keeps 8 bits of mantissa: the first loss agrees to about 1 %.
    tolerance, ours_note = (1e-5, "channels-last on the CPU") if device == "cpu" else (2e-2, "bfloat16 autocast, channels-last")
    same = math.isclose(first_losses["ours"], first_losses["plain"], rel_tol=tolerance)
    amp = ", AMP" if device == "cuda" else ""
    return Row(
        f"Training step, AutoSpeech genotype network, {size.label} (C {size.channels}, {size.layers} layers, "
        f"batch {size.batch}, {size.frames}x257, {size.classes} classes{amp})",
        seconds_text(seconds["ours"]), seconds_text(seconds["plain"]), ratio,
        "> 1x, same loss", ratio > 1.0 and same,
        f"first-step loss {first_losses['ours']:.6f} vs {first_losses['plain']:.6f}; ours: {ours_note}",
    )
