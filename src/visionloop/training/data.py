"""Reading the prepared cache for training: the class map, square image sizes, batches.

Batches are gathered straight from the memory-mapped uint8 cache, so an epoch never decodes
an image and memory stays bounded by the batch, whatever the dataset's size. On a GPU the
uint8 train split is moved to the device once when it fits (`TrainImages`): batches are then
gathered there, with no host work and no host-to-device copy per step.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from visionloop.artifacts.prepared import PreparedSplit
from visionloop.artifacts.raw_store import require_classes
from visionloop.errors import VisionloopError


@dataclass(frozen=True)
class ClassMap:
    version: int
    classes: tuple[str, ...]


def read_class_map(raw_dir: Path) -> ClassMap:
    version, classes = require_classes(raw_dir)
    return ClassMap(version=version, classes=tuple(classes))


def image_size_of(split: PreparedSplit, name: str) -> int:
    _, height, width, _ = split.images.shape
    if height != width:
        raise VisionloopError(
            f"prepared {name} images are {height}x{width}; training needs squares"
        )
    return height


def batches(
    split: PreparedSplit, indices: list[int] | np.ndarray, batch_size: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(uint8 N x 3 x H x W, int64 labels) batches in the given order."""
    indices = np.asarray(indices, dtype=np.int64)
    for start in range(0, len(indices), batch_size):
        chosen = indices[start : start + batch_size]
        images = torch.from_numpy(np.ascontiguousarray(split.images[chosen]))
        yield images.permute(0, 3, 1, 2), torch.from_numpy(split.labels[chosen])


GPU_CACHE_SHARE = 0.5  # at most this share of the free GPU memory holds the train split
COPY_CHUNK = 4096  # images copied to the GPU at a time (host memory stays bounded)


class TrainImages:
    """Where the train batches come from: the GPU copy of the split, or the memmap."""

    def __init__(self, split: PreparedSplit, device: torch.device) -> None:
        self.split = split
        self.images: torch.Tensor | None = None  # uint8 N x H x W x 3 on the device
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if split.images.nbytes <= GPU_CACHE_SHARE * free:
                self.images = torch.empty(split.images.shape, dtype=torch.uint8, device=device)
                for start in range(0, len(split), COPY_CHUNK):
                    chunk = np.ascontiguousarray(split.images[start : start + COPY_CHUNK])
                    self.images[start : start + len(chunk)] = torch.from_numpy(chunk)
                self.labels = torch.from_numpy(split.labels).to(device)

    @property
    def on_device(self) -> bool:
        return self.images is not None

    def batches(
        self, indices: list[int] | np.ndarray, batch_size: int
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(uint8 N x 3 x H x W, int64 labels) in the given order, as `batches` gives them;
        on the GPU the images are a channels-last view of the cache's N x H x W x 3 rows."""
        if self.images is None:
            yield from batches(self.split, indices, batch_size)
            return
        order = torch.as_tensor(np.asarray(indices, dtype=np.int64), device=self.images.device)
        for chosen in order.split(batch_size):
            yield self.images[chosen].permute(0, 3, 1, 2), self.labels[chosen]


def batch_count(n: int, batch_size: int) -> int:
    return math.ceil(n / batch_size)


def balanced_indices(labels: np.ndarray, seed: int, epoch: int) -> np.ndarray:
    """An epoch of len(labels) indices drawn with replacement, every class equally likely
    (train.class_balance: balanced_sampler); a function of (seed, epoch) alone, so a resumed
    run draws what an uninterrupted one does."""
    counts = np.bincount(labels)
    weights = 1.0 / counts[labels]
    rng = np.random.default_rng([seed, epoch])
    return rng.choice(len(labels), size=len(labels), p=weights / weights.sum())


def shard(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This process's share; every process gets the same count (DDP steps in lockstep)."""
    usable = len(indices) - len(indices) % world_size
    return indices[rank:usable:world_size]


def inverse_frequency_weights(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Per-class loss weights n / (k * n_c), so every class weighs the same in total
    (train.class_balance: weighted_loss); classes without train images get weight 1."""
    counts = np.bincount(labels, minlength=num_classes).astype(np.float64)
    present = counts > 0
    weights = np.ones(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights
