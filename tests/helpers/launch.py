"""Run an entry script's `main` as its command line does (plainly or under torchrun), with probes the tests need.

    python -m tests.helpers.launch [--record DIR] [--send_signal NAME --at_call N] [--chunk N] [--group_norm] \
        SCRIPT.py ARGS...

The probes are attached from outside, to the network the script builds and to the evaluation's chunking, so the
product code carries nothing for them:

- `--record DIR`: every training forward pass of process R appends one JSON line to DIR/rank<R>.jsonl: the
  network's `drop_path_prob` and a digest of each sample it is given (a digest of the crop itself, so it tells
  apart utterances, crop starts and time reversals);
- `--send_signal NAME --at_call N`: the process sends itself SIGKILL, SIGTERM or SIGINT at its N-th training forward
  pass, a kill or a Ctrl-C at a step chosen in advance instead of at a moment raced for;
- `--chunk N`: evaluation shares the utterances in chunks of N (so that a tiny corpus gives each process several);
- `--group_norm`: every BatchNorm of the network becomes a GroupNorm over each sample's own channels, a network
  whose outputs do not depend on which other samples share the batch (or the process).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import importlib
import json
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn


def sample_digests(batch: torch.Tensor) -> list[str]:
    return [hashlib.sha1(sample.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16] for sample in batch]


def without_batch_statistics(model: nn.Module) -> nn.Module:
    """Replace every BatchNorm2d of `model` by a GroupNorm of one group (per-sample statistics), in place."""
    for name, child in model.named_children():
        if isinstance(child, nn.BatchNorm2d):
            setattr(model, name, nn.GroupNorm(1, child.num_features, affine=child.affine))
        else:
            without_batch_statistics(child)
    return model


class TrainingProbe:
    """A forward pre-hook that counts the training forward passes, records what they see, and signals."""

    def __init__(self, record: Path | None, signum: int | None, at_call: int | None) -> None:
        self.record, self.signum, self.at_call, self.calls = record, signum, at_call, 0

    def __call__(self, module: nn.Module, inputs: tuple) -> None:
        if not module.training:
            return
        self.calls += 1
        if self.record is not None:
            rank = int(os.environ.get("RANK", "0"))
            line = {"drop_path_prob": getattr(module, "drop_path_prob", None), "items": sample_digests(inputs[0])}
            with open(self.record / f"rank{rank}.jsonl", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(line) + "\n")
        if self.signum is not None and self.calls == self.at_call:
            os.kill(os.getpid(), self.signum)


def read_record(folder: Path, rank: int = 0) -> list[dict]:
    """The training forward passes process `rank` recorded, in order."""
    lines = (folder / f"rank{rank}.jsonl").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def main() -> None:
    # No option may abbreviate one of torchrun's, which reads the whole command line (`--signal` would be taken for
    # its `--signals-to-handle`).
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--record", type=Path)
    parser.add_argument("--send_signal", choices=("SIGKILL", "SIGTERM", "SIGINT"))
    parser.add_argument("--at_call", type=int)
    parser.add_argument("--chunk", type=int)
    parser.add_argument("--group_norm", action="store_true")
    parser.add_argument("script")
    parser.add_argument("args", nargs=argparse.REMAINDER)
    options = parser.parse_args()

    from functions import evaluation, tasks
    from functions.experiment import KNOWN_ERRORS
    from utils.cli import run_main

    if options.record is not None:
        options.record.mkdir(parents=True, exist_ok=True)
    probe = TrainingProbe(options.record, getattr(signal, options.send_signal) if options.send_signal else None,
                          options.at_call)
    build_network = tasks.build_network

    def probed_network(*args, **kwargs) -> nn.Module:
        model = build_network(*args, **kwargs)
        if options.group_norm:
            without_batch_statistics(model)
        model.register_forward_pre_hook(probe)
        return model

    tasks.build_network = probed_network
    if options.chunk:
        evaluation.utterance_chunks = functools.partial(evaluation.utterance_chunks, chunk=options.chunk)
    module = importlib.import_module(options.script.removesuffix(".py"))
    sys.argv = [options.script, *options.args]
    run_main(module.main, KNOWN_ERRORS)


if __name__ == "__main__":
    main()
