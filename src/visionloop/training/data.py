"""Reading the prepared cache for training: the class map, square image sizes, batches.

Batches are gathered straight from the memory-mapped uint8 cache, so an epoch never decodes
an image and memory stays bounded by the batch, whatever the dataset's size.
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
