"""What the benchmark rows share: interleaved timing, the row format, the table and the machine's description."""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import io
import os
import platform
import statistics
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import torch
from torch import nn
from yacs.config import CfgNode

from functions.distributed import single_process
from functions.experiment import IDENTIFICATION_SELECTION
from functions.trainer import ArchitectureStep, Trainer
from utils.config import get_default_config, update_config

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Row:
    """One line of the table. `ratio` is the reference's cost over ours: above 1, ours is better; None: the row
    could not be measured on this machine (its notes say why)."""

    benchmark: str
    ours: str
    reference: str
    ratio: float | None
    goal: str
    met: bool | None  # None: no goal was set for this row
    notes: str


@dataclass(frozen=True)
class NetworkSize:
    """The network and batch a step is timed at; `config` is the YAML whose optimiser settings the step uses."""

    channels: int
    layers: int
    batch: int
    frames: int
    classes: int
    repetitions: int
    label: str = ""
    config: str = ""

    @classmethod
    def from_config(cls, config: str, repetitions: int, label: str = "", classes: int | None = None,
                    batch: int | None = None) -> "NetworkSize":
        cfg = experiment_config(config)
        return cls(cfg.MODEL.INIT_CHANNELS, cfg.MODEL.LAYERS, batch or cfg.TRAIN.BATCH_SIZE,
                   cfg.DATASET.PARTIAL_N_FRAMES, classes or cfg.MODEL.NUM_CLASSES, repetitions, label, config)


def interleaved_medians(
    runs: dict[str, Callable[[], object]], repetitions: int, warmup: int = 1
) -> dict[str, float]:
    """Median wall seconds of each callable. They run in turn, round after round, so that load from other
    processes on a shared machine falls on every side alike; warm-up rounds (file caches, oneDNN's kernel
    creation, cuDNN's algorithm search) are not timed. CUDA work is waited for before the clock stops."""
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for round_index in range(warmup + repetitions):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            if torch.cuda.is_initialized():
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
            if round_index >= warmup:
                seconds[name].append(elapsed)
    return {name: statistics.median(values) for name, values in seconds.items()}


def peak_memory_of(run: Callable[[], object], device: str = "cpu") -> tuple[int, int]:
    """Bytes in use before `run()` and at its peak: the process's resident set on the CPU (Linux's VmHWM, reset
    first through /proc/self/clear_refs), allocated tensors on a GPU. On the CPU the memory that earlier work
    freed is first handed back to the system (glibc's malloc_trim): a step that reuses it would not grow the
    resident set, and would seem to need nothing."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        run()
        torch.cuda.synchronize()
        return before, torch.cuda.max_memory_allocated()
    gc.collect()
    trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    if trim is not None:
        trim(0)
    with open("/proc/self/clear_refs", "w", encoding="ascii") as clear_refs:
        clear_refs.write("5")
    before = _proc_kib_field("/proc/self/status", "VmRSS")
    run()
    return before, _proc_kib_field("/proc/self/status", "VmHWM")


def available_memory_bytes(device: str = "cpu") -> int:
    """Memory a new allocation can take without swapping (MemAvailable) or, on a GPU, its free memory."""
    if device == "cuda":
        return torch.cuda.mem_get_info()[0]
    return _proc_kib_field("/proc/meminfo", "MemAvailable")


def _proc_kib_field(path: str, field: str) -> int:
    """Bytes of a `Field:   N kB` line of a /proc file."""
    with open(path, encoding="ascii") as lines:
        return next(int(line.split()[1]) * 1024 for line in lines if line.startswith(f"{field}:"))


def seeded(step: Callable[[], T]) -> Callable[[], T]:
    """Call k of the returned function first seeds torch's RNG with k, so that every side of a row draws the same
    random numbers (Gumbel samples, drop-path masks) at the same step."""
    calls = iter(range(2**62))

    def run() -> T:
        torch.manual_seed(next(calls))
        return step()

    return run


def experiment_config(relative_path: str, amp: bool = False) -> CfgNode:
    """One of the project's YAML configs over the defaults, as the entry scripts read it (with TRAIN.AMP on if
    `amp`)."""
    overrides = ["TRAIN.AMP", "True"] if amp else []
    return update_config(get_default_config(), argparse.Namespace(cfg=str(REPO / relative_path), opts=overrides))


def trainer_for(cfg: CfgNode, model: nn.Module, optimizer: torch.optim.Optimizer,
                architecture: ArchitectureStep | None = None, device: str = "cpu") -> Trainer:
    """The project's training loop around `model` (already on `device`), for timing its steps (no data loader, run
    folder or schedule: the steps do not use them)."""
    return Trainer(cfg, single_process(device), None, model, optimizer, None, None, lambda epoch: {},
                   IDENTIFICATION_SELECTION, drop_path_prob=lambda epoch: 0.0, architecture=architecture)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow what the project's code prints (progress bars, log lines) while it is being timed."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        yield


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_line(device: str = "cpu") -> str:
    versions = f"torch {torch.__version__.split('+')[0]}, Python {platform.python_version()}"
    if device == "cuda":
        return (f"GPU rows: {torch.cuda.get_device_name()}, CUDA {torch.version.cuda}, cuDNN "
                f"{torch.backends.cudnn.version()}, {versions}; host {cpu_model()}, {os.cpu_count()} cores")
    gpu = "a CUDA GPU is present but unused" if torch.cuda.is_available() else "no GPU on this machine"
    return (f"CPU rows only ({gpu}): {cpu_model()}, {os.cpu_count()} cores, torch intra-op threads: "
            f"{torch.get_num_threads()}, {versions}")


def seconds_text(value: float) -> str:
    if value < 0.01:
        return f"{value * 1000:.2f} ms"
    return f"{value * 1000:.1f} ms" if value < 1.0 else f"{value:.2f} s"


def bytes_text(value: float) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= size:
            return f"{value / size:.1f} {unit}"
    return f"{value:.0f} B"


def markdown_table(rows: list[Row], title: str, device: str = "cpu") -> str:
    lines = [
        f"# {title}",
        "",
        machine_line(device),
        "",
        "Ratio = the reference's cost / ours (above 1: ours is better). Times are medians of interleaved repetitions.",
        "Written by `python benchmarks/run_all.py` (`--device cuda` on a GPU); methods: benchmarks/README.md.",
        "",
        "| Benchmark | Ours | Reference | Ratio | Goal | Met | Same result / notes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        met = {True: "yes", False: "no", None: "-"}[row.met]
        ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
        cells = (row.benchmark, row.ours, row.reference, ratio, row.goal, met, row.notes)
        lines.append("| " + " | ".join(cell.replace("|", "/") for cell in cells) + " |")
    return "\n".join(lines) + "\n"

