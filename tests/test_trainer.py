"""The training loop in-process: exact resume, interruption, NaN stop, full disk."""
from __future__ import annotations

import errno
import math
import os
import signal

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset

from functions.data_loading import training_loader
from functions.distributed import single_process
from functions.lr_schedules import build_lr_schedule
from functions.run_directory import RunDirectory, load_resume_checkpoint
from functions.trainer import NonFiniteLossError, Selection, Trainer, TrainingInterrupted
from utils.checkpoint import load_checkpoint, save_checkpoint
from utils.config import get_default_config
from utils.files import OutputError
from utils.run_logging import create_logger

CPU = single_process()


class NoisyFrames(Dataset):
    """Random crops stand-in: each item draws from torch's RNG, like the spectrogram datasets do."""

    def __len__(self) -> int:
        return 40

    def __getitem__(self, index: int):
        label = index % 4
        return torch.randn(6, 8) + label, label


class TinyNet(nn.Module):
    def __init__(
        self, fail_at_call: int | None = None, signal_at_call: int | None = None, dropout: float = 0.2
    ) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Dropout(dropout), nn.Linear(16, 4))
        self.drop_path_prob = 0.0
        self.calls, self.fail_at_call, self.signal_at_call = 0, fail_at_call, signal_at_call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.signal_at_call:
            os.kill(os.getpid(), signal.SIGINT)
        out = self.body(x).mean(dim=1)
        return out * float("nan") if self.calls == self.fail_at_call else out


def adam(parameters) -> torch.optim.Optimizer:
    return torch.optim.Adam(parameters, lr=0.01)


def make_trainer(root, epochs=3, ctx=CPU, batch=4, optimizer=adam, lr_lag=False, **net_options):
    cfg = get_default_config()
    cfg.TRAIN.END_EPOCH, cfg.VAL_FREQ, cfg.PRINT_FREQ, cfg.SEED = epochs, 1, 2, 7
    cfg.TRAIN.LR, cfg.TRAIN.LR_MIN, cfg.TRAIN.PUBLISHED_LR_LAG = 0.01, 0.001, lr_lag
    cfg.freeze()
    torch.manual_seed(0)
    model = TinyNet(**net_options)
    run = RunDirectory(root)
    run.model_dir.mkdir(parents=True, exist_ok=True)
    run.log_dir.mkdir(parents=True, exist_ok=True)
    optimizer = optimizer(model.parameters())
    scheduler = build_lr_schedule(cfg, optimizer)
    loader = training_loader(NoisyFrames(), batch, cfg.SEED, ctx, num_workers=0)

    def validate(_epoch):
        return {"val_top1": float(sum(p.detach().sum() for p in model.parameters()))}

    create_logger(None, ctx.is_main)
    return Trainer(cfg, ctx, run, model, optimizer, scheduler, loader, validate,
                   Selection("val_top1", True, "best_acc1"), drop_path_prob=lambda e: 0.1 * e)


def weights(path):
    return load_checkpoint(path)["state_dict"]


def test_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    straight = make_trainer(tmp_path / "straight")
    straight_history = straight.fit()

    # 10 batches per epoch: the SIGINT arrives in the middle of the second epoch.
    interrupted = make_trainer(tmp_path / "stopped", signal_at_call=14)
    with pytest.raises(TrainingInterrupted, match="epoch 1, step 4"):
        interrupted.fit()
    saved = load_checkpoint(interrupted.run.last_checkpoint)
    assert (saved["epoch"], saved["step_in_epoch"]) == (1, 4)

    resumed = make_trainer(tmp_path / "stopped")
    resumed.restore(load_resume_checkpoint(resumed.run, create_logger(None)))
    resumed.model.load_state_dict(saved["state_dict"])
    resumed_history = resumed.fit()

    assert resumed_history == straight_history
    final_a, final_b = weights(straight.run.last_checkpoint), weights(resumed.run.last_checkpoint)
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
    assert load_checkpoint(resumed.run.last_checkpoint)["global_step"] == 30


def test_nan_loss_stops_with_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, fail_at_call=13)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 2 \(global step 12\)"):
        trainer.fit()
    kept = load_checkpoint(trainer.run.last_checkpoint)
    assert kept["epoch"] == 1 and all(torch.isfinite(t).all() for t in kept["state_dict"].values())


def test_corrupt_last_checkpoint_falls_back_to_the_previous_one(tmp_path):
    trainer = make_trainer(tmp_path, epochs=2)
    trainer.fit()
    trainer.run.last_checkpoint.write_bytes(trainer.run.last_checkpoint.read_bytes()[:500])
    checkpoint = load_resume_checkpoint(trainer.run, create_logger(None))
    assert checkpoint["epoch"] == 2 and checkpoint["step_in_epoch"] == 0


def test_full_disk_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pth"
    save_checkpoint({"epoch": 1}, path)

    def disk_full(_fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OutputError, match="No space left on device"):
        save_checkpoint({"epoch": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_last.pth"]


def cosine(epoch: int, epochs: int) -> float:
    """The cosine schedule from 0.01 to 0.001 by hand."""
    return 0.001 + 0.009 * (1 + math.cos(math.pi * epoch / epochs)) / 2


@pytest.mark.parametrize("lr_lag,trained_at", [(False, [0, 1, 2, 3]), (True, [0, 0, 1, 2])])
def test_lr_per_epoch_with_and_without_the_published_lag_also_after_resume(lr_lag, trained_at, tmp_path):
    expected = [cosine(epoch, 4) for epoch in trained_at]
    straight = make_trainer(tmp_path / "straight", epochs=4, lr_lag=lr_lag).fit()
    assert [row["lr"] for row in straight] == pytest.approx(expected, rel=1e-12)

    first = make_trainer(tmp_path / "resumed", epochs=4, lr_lag=lr_lag)
    first.fit()
    resumed = make_trainer(tmp_path / "resumed", epochs=4, lr_lag=lr_lag)
    resumed.restore(load_checkpoint(first.run.epoch_checkpoint(1)))
    assert [row["lr"] for row in resumed.fit()] == pytest.approx(expected, rel=1e-12)
