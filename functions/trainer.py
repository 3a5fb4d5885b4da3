"""The one training loop, shared by the search, the from-scratch training and the baselines.

A run is a deterministic function of its config: each epoch reseeds the random state from (SEED, epoch,
rank), data come from `functions.data_loading`, and a checkpoint holds everything the loop needs to continue
(weights, optimisers, lr schedule, global step, history of logged metrics, random state, and, when stopped
mid-epoch, the batches already taken with their running sums). So a run resumed from its last checkpoint
gives the same weights and metrics as one never stopped.
"""
from __future__ import annotations

import math
import signal
import threading
import time
import warnings
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from yacs.config import CfgNode

from functions.data_loading import EpochSampler, item_seed
from functions.distributed import DistributedContext, all_gather_objects, all_reduce_sum, barrier
from functions.run_directory import RunDirectory
from models.losses import build_loss
from utils.checkpoint import save_checkpoint
from utils.progress import progress
from utils.run_logging import get_logger


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the run stops and keeps its last good checkpoint."""


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; the current state was saved."""

    def __init__(self, signum: int, message: str) -> None:
        super().__init__(message)
        self.signum = signum
        # The status a shell reports for a process killed by that signal.
        self.exit_code = 128 + signum


@dataclass(frozen=True)
class Selection:
    """Which validation metric picks `checkpoint_best.pth`, and the checkpoint field that records it."""

    metric: str
    higher_is_better: bool
    checkpoint_key: str

    def improves(self, value: float, best: float | None) -> bool:
        if best is None:
            return True
        return value > best if self.higher_is_better else value < best


@dataclass
class ArchitectureStep:
    """Search: one step of the architecture parameters on a `val` batch before each weight step, from epoch
    `warmup_epochs` on; its loss is the mean over `samples` forwards, each with its own Gumbel sample."""

    loader: DataLoader
    optimizer: torch.optim.Optimizer
    warmup_epochs: int = 0
    samples: int = 1

    def steps_in(self, epoch: int) -> bool:
        return epoch >= self.warmup_epochs


@dataclass
class LoopState:
    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    best: float | None = None
    history: list[dict] = field(default_factory=list)
    partial: dict[str, float] = field(default_factory=lambda: {"loss": 0.0, "correct": 0.0, "count": 0.0})
    rng_states: list | None = None
    rng_world_size: int = 0


class _StopFlag:
    signum: int = 0


@contextmanager
def stop_on_signals() -> Iterator[_StopFlag]:
    """Turn SIGINT and SIGTERM into a flag the loop checks after each step."""
    flag = _StopFlag()
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def request_stop(signum: int, _frame) -> None:
        flag.signum = signum

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield flag
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def autocast_dtype(cfg: CfgNode, device: torch.device) -> torch.dtype | None:
    """The mixed-precision type when TRAIN.AMP is on and the device is CUDA, else None (full precision)."""
    if not cfg.TRAIN.AMP or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def use_faster_memory_format(model: nn.Module, device: torch.device, mixed_precision: bool = False) -> None:
    """Store the model's 4-d weights channels-last where that is faster; every activation then follows.

    On the CPU, oneDNN runs the networks' depthwise convolutions, the largest part of a step, faster on
    channels-last tensors: a training step takes 1.3-1.8x less time. On CUDA only half-precision autocast gains
    (the paper-size training step on an H200: 80 ms instead of 91 ms); in float32 channels-last was slower there
    (107 ms against 98 ms), so float32 CUDA models keep their layout (benchmarks/README.md). Only float rounding
    changes. A network whose `channels_last` attribute is False keeps its layout.
    """
    if not getattr(model, "channels_last", True):
        return
    if device.type == "cpu" or (device.type == "cuda" and mixed_precision):
        model.to(memory_format=torch.channels_last)


class Trainer:
    def __init__(
        self,
        cfg: CfgNode,
        ctx: DistributedContext,
        run: RunDirectory,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        train_loader: DataLoader,
        validate: Callable[[int], dict[str, float]],
        selection: Selection,
        drop_path_prob: Callable[[int], float],
        architecture: ArchitectureStep | None = None,
        checkpoint_extras: Callable[[], dict] = dict,
        on_epoch_end: Callable[[int, dict], None] | None = None,
        find_unused_parameters: bool = False,
        on_epoch_start: Callable[[int], None] | None = None,
        stop_early: Callable[[list[dict]], str | None] | None = None,
    ) -> None:
        self.cfg, self.ctx, self.run = cfg, ctx, run
        self.model, self.optimizer, self.scheduler = model, optimizer, scheduler
        self.train_loader, self.validate, self.selection = train_loader, validate, selection
        self.drop_path_prob, self.architecture = drop_path_prob, architecture
        self.checkpoint_extras, self.on_epoch_end = checkpoint_extras, on_epoch_end
        # `stop_early` reads only the history, which the checkpoint holds, so a resumed run stops where the
        # uninterrupted one did; it returns why it stops, or None.
        self.on_epoch_start, self.stop_early = on_epoch_start, stop_early
        self.state = LoopState(epoch=cfg.TRAIN.BEGIN_EPOCH)
        self.criterion = build_loss(cfg)
        self.amp_dtype = autocast_dtype(cfg, ctx.device)
        scaler_on = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=scaler_on)
        self.arch_scaler = torch.amp.GradScaler("cuda", enabled=scaler_on)
        use_faster_memory_format(model, ctx.device, self.amp_dtype is not None)
        self.network: nn.Module = model
        if ctx.is_distributed:
            device_ids = [ctx.device.index] if ctx.device.type == "cuda" else None
            self.network = DistributedDataParallel(
                model, device_ids=device_ids, find_unused_parameters=find_unused_parameters
            )
        self.logger = get_logger()
        self.writer = None
        # Wall time of the last epoch's batches (data loading included, validation and checkpoints not).
        self.train_seconds = 0.0

    # ----- checkpoints -----
    def checkpoint_state(self) -> dict:
        state = {
            "epoch": self.state.epoch,
            "step_in_epoch": self.state.step_in_epoch,
            "global_step": self.state.global_step,
            "state_dict": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "path_helper": self.run.path_helper,
            self.selection.checkpoint_key: self.state.best,
            "history": self.state.history,
            "partial_epoch": dict(self.state.partial),
            "rng": self.state.rng_states,
            "rng_world_size": self.state.rng_world_size,
            "config": self.cfg.dump(),
        }
        if self.architecture is not None:
            state["arch_optimizer"] = self.architecture.optimizer.state_dict()
        state.update(self.checkpoint_extras())
        return state

    def restore(self, checkpoint: dict) -> None:
        """Continue from `checkpoint` (the model weights must already be loaded)."""
        # The schedule follows this run's config, which may extend TRAIN.END_EPOCH: it is replayed from its start,
        # as a run with this config from scratch would have stepped it, and the optimiser then takes that rate.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for _ in range(int(checkpoint["epoch"])):
                self.scheduler.step()
        scheduled = [group["lr"] for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        for group, lr in zip(self.optimizer.param_groups, scheduled):
            group["lr"] = lr
        if self.architecture is not None and "arch_optimizer" in checkpoint:
            self.architecture.optimizer.load_state_dict(checkpoint["arch_optimizer"])
        self.state.epoch = int(checkpoint["epoch"])
        self.state.global_step = int(checkpoint.get("global_step", 0))
        self.state.best = checkpoint.get(self.selection.checkpoint_key)
        self.state.history = list(checkpoint.get("history", []))
        step = int(checkpoint.get("step_in_epoch", 0))
        same_world = checkpoint.get("rng_world_size") == self.ctx.world_size
        if step and same_world and checkpoint.get("rng"):
            self.state.step_in_epoch = step
            self.state.partial = dict(checkpoint["partial_epoch"])
            _set_rng_state(checkpoint["rng"][self.ctx.rank], self.ctx.device)
        elif step:
            self.logger.info(
                f"the checkpoint stopped inside epoch {self.state.epoch} with another number of processes; "
                "that epoch restarts from its beginning"
            )
            self.state.global_step -= step
        if self.state.epoch >= self.cfg.TRAIN.END_EPOCH:
            self.logger.info(f"the run already finished its {self.cfg.TRAIN.END_EPOCH} epochs")

    def _save(self, epoch_checkpoint: bool, best: bool) -> None:
        rng = all_gather_objects(self.ctx, _rng_state(self.ctx.device)) if self.state.step_in_epoch else None
        self.state.rng_states, self.state.rng_world_size = rng, self.ctx.world_size
        if not self.ctx.is_main:
            return
        state = self.checkpoint_state()
        if epoch_checkpoint:
            save_checkpoint(state, self.run.epoch_checkpoint(self.state.epoch - 1))
        if best:
            save_checkpoint(state, self.run.best_checkpoint)
        self.run.write_metrics(self.state.history)
        # Last, so that a run killed before this line resumes from the previous state and rewrites the files above.
        save_checkpoint(state, self.run.last_checkpoint)

    # ----- the loop -----
    def fit(self) -> list[dict]:
        if self.ctx.is_main:
            from tensorboardX import SummaryWriter

            purge = self.state.global_step if self.state.global_step else None
            self.writer = SummaryWriter(logdir=str(self.run.log_dir), purge_step=purge)
        end = self.cfg.TRAIN.END_EPOCH
        epochs = progress(end, "epochs", "epoch", initial=self.state.epoch, enabled=self.ctx.is_main, every=1)
        if self._stopped_early():
            epochs.close()
            return self.state.history
        try:
            with stop_on_signals() as stop:
                for epoch in range(self.state.epoch, end):
                    self._train_epoch(epoch, stop)
                    self._end_epoch(epoch)
                    epochs.update(1)
                    # A signal during validation or saving stops the run here, its state already saved.
                    stopped = all_reduce_sum(self.ctx, torch.tensor(float(stop.signum > 0), device=self.ctx.device))
                    if stopped.item() > 0:
                        raise self._interrupted(stop.signum or signal.SIGTERM, f"after epoch {epoch}")
                    if self._stopped_early():
                        break
        finally:
            epochs.close()
            if self.writer is not None:
                self.writer.close()
        return self.state.history

    def _stopped_early(self) -> bool:
        reason = self.stop_early(self.state.history) if self.stop_early and self.state.history else None
        if reason:
            self.logger.info(f"stopped early after epoch {self.state.history[-1]['epoch']}: {reason}")
        return bool(reason)

    def _sampler(self, loader: DataLoader) -> EpochSampler:
        return loader.sampler

    def _architecture_batches(self, epoch: int, start: int) -> Iterator:
        sampler = self._sampler(self.architecture.loader)
        per_pass = sampler.batches_per_epoch
        passes, skip = divmod(start, per_pass)
        while True:
            sampler.set_epoch(epoch * 1000 + passes, skip)
            yield from self.architecture.loader
            passes, skip = passes + 1, 0

    def _autocast(self):
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def _architecture_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        optimizer, samples = self.architecture.optimizer, self.architecture.samples
        optimizer.zero_grad(set_to_none=True)
        # One backward per sample: the gradients add up while only one sample's activations are held.
        for _ in range(samples):
            with self._autocast():
                loss = self.criterion(self.network(inputs), targets) / samples
            self.arch_scaler.scale(loss).backward()
        self.arch_scaler.step(optimizer)
        self.arch_scaler.update()

    def _weight_step(self, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        with self._autocast():
            logits = self.network(inputs)
            loss = self.criterion(logits, targets)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), logits.detach()

    def _to_device(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        inputs, targets = batch
        return inputs.to(self.ctx.device, non_blocking=True), targets.to(self.ctx.device, non_blocking=True)

    def _train_epoch(self, epoch: int, stop: _StopFlag) -> None:
        started = time.perf_counter()
        start = self.state.step_in_epoch
        if start == 0:
            torch.manual_seed(item_seed(self.cfg.SEED, epoch, -2 - self.ctx.rank))
            self.state.partial = {"loss": 0.0, "correct": 0.0, "count": 0.0}
        if hasattr(self.model, "drop_path_prob"):
            self.model.drop_path_prob = self.drop_path_prob(epoch)
        self.criterion.set_epoch(epoch)
        if self.on_epoch_start is not None:
            self.on_epoch_start(epoch)
        self.network.train()
        sampler = self._sampler(self.train_loader)
        sampler.set_epoch(epoch, start)
        sums = torch.tensor(
            [self.state.partial["loss"], self.state.partial["correct"], self.state.partial["count"]],
            dtype=torch.float64, device=self.ctx.device,
        )
        stepping = self.architecture is not None and self.architecture.steps_in(epoch)
        arch_batches = self._architecture_batches(epoch, start) if stepping else None
        print_freq = self.cfg.PRINT_FREQ
        bar = progress(sampler.batches_per_epoch, f"epoch {epoch}", "batch", initial=start, leave=False,
                       enabled=self.ctx.is_main, every=print_freq)
        for step, batch in enumerate(self.train_loader, start=start):
            if arch_batches is not None:
                self._architecture_step(*self._to_device(next(arch_batches)))
            inputs, targets = self._to_device(batch)
            loss, logits = self._weight_step(inputs, targets)
            flags = all_reduce_sum(
                self.ctx,
                torch.stack([(~torch.isfinite(loss)).double(), torch.tensor(float(stop.signum > 0), device=loss.device)]),
            )
            if flags[0].item() > 0:
                kept = self.run.last_checkpoint
                raise NonFiniteLossError(
                    f"loss became {loss.item()} at epoch {epoch}, step {step} (global step {self.state.global_step});"
                    + (f" the last good checkpoint is {kept}" if kept.exists() else " no checkpoint was saved yet")
                )
            sums += torch.stack([loss.double() * targets.numel(), (logits.argmax(1) == targets).sum().double(),
                                 torch.tensor(float(targets.numel()), device=loss.device, dtype=torch.float64)])
            self.state.step_in_epoch, self.state.global_step = step + 1, self.state.global_step + 1
            if (step + 1) % print_freq == 0 and self.ctx.is_main:
                loss_now, correct, count = sums.tolist()
                bar.set_postfix(loss=f"{loss_now / count:.4f}", acc=f"{100 * correct / count:.2f}")
                self.writer.add_scalar("train/loss_step", loss.item(), self.state.global_step)
            bar.update(1)
            if flags[1].item() > 0:
                self._interrupt(epoch, step, sums, stop.signum or signal.SIGTERM)
        bar.close()
        self.state.partial = dict(zip(("loss", "correct", "count"), all_reduce_sum(self.ctx, sums).tolist()))
        self.train_seconds = time.perf_counter() - started

    def _interrupt(self, epoch: int, step: int, sums: torch.Tensor, signum: int) -> None:
        self.state.partial = dict(zip(("loss", "correct", "count"), sums.tolist()))
        self._save(epoch_checkpoint=False, best=False)
        barrier(self.ctx)
        raise self._interrupted(signum, f"at epoch {epoch}, step {step + 1}")

    def _interrupted(self, signum: int, where: str) -> TrainingInterrupted:
        return TrainingInterrupted(
            signum,
            f"stopped by {signal.Signals(signum).name} {where}; state saved to {self.run.last_checkpoint}; "
            f"continue with --load_path {self.run.root}",
        )

    def _end_epoch(self, epoch: int) -> None:
        loss_sum, correct, count = (self.state.partial[k] for k in ("loss", "correct", "count"))
        metrics = {
            "epoch": epoch,
            "lr": self.optimizer.param_groups[0]["lr"],
            "train_loss": loss_sum / count,
            "train_top1": 100.0 * correct / count,
        }
        self.scheduler.step()
        validated = epoch % self.cfg.VAL_FREQ == 0 or epoch == self.cfg.TRAIN.END_EPOCH - 1
        if validated:
            metrics.update(self.validate(epoch))
        value = metrics.get(self.selection.metric)
        improved = value is not None and math.isfinite(value) and self.selection.improves(value, self.state.best)
        if improved:
            self.state.best = value
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, metrics)
        self.state.epoch, self.state.step_in_epoch = epoch + 1, 0
        self.state.history.append(metrics)
        self._save(epoch_checkpoint=validated, best=improved)
        if self.ctx.is_main:
            # Numbers go to TensorBoard; text (a search's genotype) only to the log line and the history.
            for name, number in metrics.items():
                if name != "epoch" and isinstance(number, (int, float)):
                    self.writer.add_scalar(f"epoch/{name}", number, epoch)
            self.logger.info(
                f"epoch {epoch}: "
                + ", ".join(f"{k} {v:.4f}" if isinstance(v, (int, float)) else f"{k} {v}"
                            for k, v in metrics.items() if k != "epoch")
                + (" (best)" if improved else "") + f"; {self.train_seconds:.2f} s of training"
            )
        barrier(self.ctx)
