"""Row 4: one training epoch end to end, what a user waits for.

Ours: `train_identification.py` as a user runs it, a separate process with torch's default thread count, its
data loader, progress output, TensorBoard, checkpoints and all; the time of each epoch's batches is read from
its own log (`...; 4.91 s of training`). Reference: a minimal reimplementation of the published train loop, in
this process with the same threads, on the same features and network size: a shuffled `DataLoader` over a
dataset that loads each whole utterance and crops it; per batch forward, loss, Top-1/Top-5 read with `.item()`,
`zero_grad`, backward, Adam's step and five TensorBoard scalars, a progress line every PRINT_FREQ batches;
`lr_scheduler.step(epoch)` after the epoch. The median epoch of each side is compared.
"""
from __future__ import annotations

import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from benchmarks.common import REPO, Row, experiment_config, seconds_text
from benchmarks.crop_loading import whole_file_item
from data_objects.datasets import SpectrogramDataset
from functions.metrics import topk_correct
from models.genotype_network import GenotypeNetwork
from models.genotypes import AUTOSPEECH, genotype_to_text

CONFIG = "exps/demo/scratch_iden.yaml"
_EPOCH_LINE = re.compile(r" epoch (\d+): .*; (\d+\.\d+) s of training$", re.M)


@dataclass(frozen=True)
class EpochSize:
    channels: int
    layers: int
    batch: int
    frames: int
    epochs: int  # timed epochs of each side (ours also runs them; the reference runs one more, untimed, first)


# The size of a newcomer's first real run on a CPU.
FULL = EpochSize(16, 4, 32, 200, 3)
QUICK = EpochSize(4, 2, 4, 100, 1)


class PublishedTrainingSet(Dataset):
    """The published training items: each whole utterance read, cropped, normalised, maybe reversed."""

    def __init__(self, ours: SpectrogramDataset) -> None:
        self.ours = ours

    def __len__(self) -> int:
        return len(self.ours)

    def __getitem__(self, index: int):
        return whole_file_item(self.ours, index)


def published_epochs(corpus: Path, size: EpochSize, log: Path) -> list[float]:
    """Wall seconds of each timed epoch of the published loop (the first epoch, a warm-up, is not returned)."""
    from tensorboardX import SummaryWriter

    cfg = experiment_config(CONFIG)
    dataset = PublishedTrainingSet(SpectrogramDataset(corpus, "merged", "train", size.frames))
    loader = DataLoader(dataset, batch_size=size.batch, shuffle=True, drop_last=True, num_workers=0)
    torch.manual_seed(cfg.SEED)
    model = GenotypeNetwork(size.channels, dataset.ours.num_classes, size.layers, AUTOSPEECH)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.TRAIN.LR)
    epochs = size.epochs + 1
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, epochs, cfg.TRAIN.LR_MIN)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.TRAIN.LABEL_SMOOTHING)
    writer = SummaryWriter(logdir=str(log))
    seconds, global_step = [], 0
    with (log / "published.log").open("w", encoding="utf-8") as progress:
        for epoch in range(epochs):
            started = time.perf_counter()
            model.train()
            model.drop_path_prob = cfg.MODEL.DROP_PATH_PROB * epoch / epochs
            for index, (inputs, targets) in enumerate(loader):
                output = model(inputs)
                loss = criterion(output, targets)
                top1, top5 = (100.0 * hits.float().mean().item() for hits in topk_correct(output, targets, (1, 5)))
                loss_value = loss.item()
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                for name, value in (("lr", cfg.TRAIN.LR), ("train_loss", loss_value), ("train_acc1", top1),
                                    ("train_acc5", top5), ("batch_time", time.perf_counter() - started)):
                    writer.add_scalar(name, value, global_step)
                global_step += 1
                if index % cfg.PRINT_FREQ == 0:
                    progress.write(f"Epoch: [{epoch}][{index}/{len(loader)}] Loss {loss_value:.4e} "
                                   f"Acc@1 {top1:6.2f} Acc@5 {top5:6.2f}\n")
            with warnings.catch_warnings():  # torch deprecates the epoch argument the published loop passed
                warnings.simplefilter("ignore")
                scheduler.step(epoch)
            seconds.append(time.perf_counter() - started)
    writer.close()
    return seconds[1:]


def our_epochs(corpus: Path, size: EpochSize, out: Path) -> list[float]:
    """Wall seconds of each epoch's batches of train_identification.py, from its log."""
    command = [
        sys.executable, "train_identification.py", "--cfg", CONFIG, "--text_arch", genotype_to_text(AUTOSPEECH),
        "DATASET.DATA_DIR", str(corpus), "OUTPUT_DIR", str(out), "MODEL.INIT_CHANNELS", str(size.channels),
        "MODEL.LAYERS", str(size.layers), "TRAIN.BATCH_SIZE", str(size.batch),
        "DATASET.PARTIAL_N_FRAMES", str(size.frames), "TRAIN.END_EPOCH", str(size.epochs), "VAL_FREQ", "1000",
    ]
    # The script's torch takes the thread count this process runs the reference with (torch's default unless
    # run_all.py --threads says otherwise).
    threads = {**os.environ, "OMP_NUM_THREADS": str(torch.get_num_threads())}
    process = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=threads)
    if process.returncode != 0:
        raise RuntimeError(f"train_identification.py exited {process.returncode}: {process.stderr[-2000:]}")
    (log,) = out.glob("logs_scratch/*/Log/train.log")
    return list({int(epoch): float(seconds) for epoch, seconds in _EPOCH_LINE.findall(log.read_text())}.values())


def end_to_end_row(corpus: Path, size: EpochSize) -> Row:
    with tempfile.TemporaryDirectory(prefix="autospeech-epoch-") as workdir:
        reference = published_epochs(corpus, size, Path(workdir))
        ours = our_epochs(corpus, size, Path(workdir) / "ours")
    steps = len(SpectrogramDataset(corpus, "merged", "train", size.frames)) // size.batch
    ours_median, reference_median = statistics.median(ours), statistics.median(reference)
    ratio = reference_median / ours_median
    return Row(
        f"Training epoch end to end: train_identification.py vs the published loop (C {size.channels}, "
        f"{size.layers} layers, batch {size.batch}, {size.frames}x257, {steps} steps, torch threads: "
        f"{torch.get_num_threads()})",
        seconds_text(ours_median), seconds_text(reference_median), ratio, "none set (reported)", None,
        f"median of {size.epochs} epochs each; ours {', '.join(f'{s:.2f}' for s in ours)} s (from its log), "
        f"published loop {', '.join(f'{s:.2f}' for s in reference)} s",
    )
