"""Reading the prepared cache for training: class map, normalisation stats, batches.

Batches are gathered straight from the memory-mapped uint8 cache, so an epoch never decodes
an image and memory stays bounded by the batch, whatever the dataset's size.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from visionloop.errors import VisionloopError
from visionloop.ingest.store import require_classes
from visionloop.prepared import PreparedSplit, open_prepared_split

STATS_FILE = "stats.json"


@dataclass(frozen=True)
class ClassMap:
    version: int
    classes: tuple[str, ...]


def read_class_map(raw_dir: Path) -> ClassMap:
    version, classes = require_classes(raw_dir)
    return ClassMap(version=version, classes=tuple(classes))


def open_split(prepared_dir: Path, split: str) -> PreparedSplit:
    try:
        return open_prepared_split(prepared_dir, split)
    except FileNotFoundError:
        raise VisionloopError(
            f"{prepared_dir / split}: prepared split not found; run the prepare stage first"
        ) from None


def normalisation_stats(
    prepared_dir: Path, train: PreparedSplit
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std on 0..1 pixels: the prepare stage's stats.json when present.

    Without that file they are computed from the training split (in chunks, so a large cache
    is never read into memory at once).
    """
    path = prepared_dir / STATS_FILE
    if path.exists():
        stats = json.loads(path.read_text())
        return tuple(map(float, stats["mean"])), tuple(map(float, stats["std"]))
    return channel_stats(train.images)


def channel_stats(
    images: np.ndarray, chunk: int = 4096
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    total = np.zeros(3)
    squares = np.zeros(3)
    for start in range(0, len(images), chunk):
        block = np.asarray(images[start : start + chunk], dtype=np.float64) / 255.0
        total += block.sum(axis=(0, 1, 2))
        squares += np.square(block).sum(axis=(0, 1, 2))
    count = max(1, len(images) * images.shape[1] * images.shape[2])
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    std = np.where(std > 1e-6, std, 1.0)  # a constant channel is left unscaled
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


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
