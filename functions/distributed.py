"""One process or many: the device, the rank and the collective operations a run needs.

A script launched with `torchrun` finds RANK, WORLD_SIZE and LOCAL_RANK in its environment and joins the
process group (NCCL on CUDA, gloo on the CPU), even with one process, so that `--nproc_per_node 1` runs the
data-parallel code as N would; launched plainly, it is rank 0 of 1 and every collective is a no-op, so the same
code serves both.
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

import torch
import torch.distributed as dist

from utils.config import ConfigError

T = TypeVar("T")
DEVICES = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class DistributedContext:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    in_process_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.in_process_group


def single_process(device: str = "cpu") -> DistributedContext:
    """Rank 0 of 1 on `device`, outside any process group: for using the project's loops from Python."""
    return DistributedContext(rank=0, world_size=1, local_rank=0, device=torch.device(device))


def select_device(requested: str, local_rank: int = 0) -> torch.device:
    """'auto' takes CUDA when present, else the CPU; 'cpu' and 'cuda' are taken as asked."""
    if requested not in DEVICES:
        raise ConfigError(f"DEVICE must be one of {', '.join(DEVICES)}, got '{requested}'")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("DEVICE is 'cuda' but no CUDA device is available")
    if requested == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def init_distributed(requested_device: str) -> DistributedContext:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = select_device(requested_device, local_rank)
    launched = "WORLD_SIZE" in os.environ
    if launched and not dist.is_initialized():
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank, device=device,
                              in_process_group=launched)


def shutdown_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def run_in_process_group(work: Callable[[], T]) -> T:
    """Run `work` (which may join the process group) and leave the group cleanly.

    After a success every process waits for the others before the group is torn down: a process that closed
    its connections while a peer was still finishing made gloo abort the peer. The objects `work` left behind
    (the DDP wrapper holds the group) are collected first, while the interpreter is whole. After a failure the
    group is left at once, since the other processes may never reach a barrier.
    """
    try:
        result = work()
    except BaseException:
        shutdown_distributed()
        raise
    gc.collect()
    if dist.is_initialized():
        dist.barrier()
    shutdown_distributed()
    return result


def barrier(ctx: DistributedContext) -> None:
    if ctx.is_distributed:
        dist.barrier()


def all_reduce_sum(ctx: DistributedContext, values: torch.Tensor) -> torch.Tensor:
    """Sum of `values` over every process (a copy; the input is left as it is)."""
    values = values.detach().clone()
    if ctx.is_distributed:
        dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_gather_objects(ctx: DistributedContext, obj: Any) -> list[Any]:
    """Every process's `obj`, ordered by rank."""
    if not ctx.is_distributed:
        return [obj]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, obj)
    return gathered


def broadcast_object(ctx: DistributedContext, obj: Any) -> Any:
    """Rank 0's `obj` on every process."""
    if not ctx.is_distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0)
    return holder[0]
