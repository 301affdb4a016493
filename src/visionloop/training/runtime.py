"""Where and how training runs: device, mixed precision, and the DDP process group.

Under `torchrun` the environment carries RANK, WORLD_SIZE and LOCAL_RANK; the process
group is gloo on CPU and nccl on CUDA. A plain `visionloop train` is a world of one.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from visionloop.config import TrainConfig
from visionloop.errors import VisionloopError


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int = 0
    world_size: int = 1
    amp_dtype: torch.dtype | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def sum_across_processes(self, values: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over all processes (float64 on CPU so every rank gets equal bits)."""
        values = values.detach().to(torch.float64).cpu()
        if self.distributed:
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values


def start_runtime(config: TrainConfig) -> Runtime:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    device = pick_device(config.device, int(os.environ.get("LOCAL_RANK", "0")))
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Runtime(device, rank, world_size, amp_dtype(config.amp, device))


def stop_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()


def pick_device(setting: str, local_rank: int) -> torch.device:
    if setting == "cuda" and not torch.cuda.is_available():
        raise VisionloopError("train.device is cuda but no CUDA device is visible; use auto")
    if setting == "cpu" or not torch.cuda.is_available():
        return torch.device("cpu")
    torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank)


def amp_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """Autocast dtype, or None for full precision.

    auto is off on CPU, where bf16 helps some models and slows others (measured in
    docs/training.md), so it is an explicit choice there; on CUDA it is bf16 where
    supported, else fp16 (with a grad scaler).
    """
    if setting == "off" or (setting == "auto" and device.type != "cuda"):
        return None
    if setting == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[setting]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """The seed of one process's epoch: a resumed run draws exactly what an uninterrupted
    one draws, with no RNG stream to carry over, whatever the number of processes."""
    return (seed * 1_000_003 + epoch * 1_009 + rank) % 2**63
