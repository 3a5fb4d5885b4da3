"""Where the time of a step goes on the CPU: torch.profiler's operators by self time, in the default layout and
channels-last (what the trainer uses on the CPU). The tables of benchmarks/README.md come from this script.

    python benchmarks/profile_steps.py [--threads 1] [--top 8]
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from torch.profiler import ProfilerActivity, profile

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.training_step import published_step  # noqa: E402
from models.genotype_network import GenotypeNetwork  # noqa: E402
from models.genotypes import AUTOSPEECH  # noqa: E402
from models.search_network import SearchNetwork  # noqa: E402


def top_operators(step: Callable[[], object], top: int) -> tuple[float, list[tuple[str, float]]]:
    """Seconds of one profiled step (after a warm-up step) and its `top` operators with their share of self time."""
    step()
    with profile(activities=[ProfilerActivity.CPU]) as profiled:
        step()
    events = profiled.key_averages()
    total = sum(event.self_cpu_time_total for event in events)
    ranked = sorted(events, key=lambda event: -event.self_cpu_time_total)[:top]
    return total / 1e6, [(event.key, 100.0 * event.self_cpu_time_total / total) for event in ranked]


def weight_step(model: nn.Module, batch: int, frames: int, classes: int, channels_last: bool) -> Callable[[], object]:
    model = copy.deepcopy(model).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    criterion = nn.CrossEntropyLoss(label_smoothing=0.1)
    inputs, targets = torch.randn(batch, frames, 257), torch.randint(0, classes, (batch,))
    return lambda: published_step(model, optimizer, criterion, inputs, targets)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Profile a search step and a training step on the CPU.")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--top", type=int, default=8, help="operators listed per step")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cases = {
        "search network, full mode (C 16, 8 layers, batch 2, 300x257, s2), forward + backward + Adam":
            (SearchNetwork(16, 1251, 8, "s2"), 2, 300, 1251),
        "genotype network (C 128, 8 layers, batch 8, 300x257, 1251 classes), forward + backward + Adam":
            (GenotypeNetwork(128, 1251, 8, AUTOSPEECH), 8, 300, 1251),
    }
    for title, (model, batch, frames, classes) in cases.items():
        for channels_last in (False, True):
            seconds, operators = top_operators(weight_step(model, batch, frames, classes, channels_last), args.top)
            layout = "channels-last" if channels_last else "default layout (NCHW)"
            print(f"\n{title}, {layout}: {seconds:.2f} s of operator self time\n")
            print("| operator | self time |\n|---|---|")
            for name, share in operators:
                print(f"| {name} | {share:.1f} % |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
