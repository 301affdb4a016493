"""The prepared tensor cache, written by prepare and read by training, evaluation and the gate.

One folder per split under `prepare.dir`: `images.npy` (uint8, N x H x W x 3, read with
mmap so memory stays bounded), `labels.npy` (int64 class indices from the class map) and
`sha256.txt` (one content hash per row, the same order); and `stats.json`: the train split's
per-channel mean and std on 0..1 pixels, the class map, the size and the resize rule, and
`facts`: what the recipe chooser (visionloop.training.recipe) knows about the source images.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.artifacts.split_table import SPLITS
from visionloop.atomic import staged_dir, write_json_atomic
from visionloop.errors import VisionloopError

__all__ = [
    "SPLITS",
    "PreparedSplit",
    "open_prepared_split",
    "write_prepared_chunks",
    "write_prepared_split",
]

STATS_FILE = "stats.json"
IMAGES_FILE = "images.npy"
LABELS_FILE = "labels.npy"
SHA256_FILE = "sha256.txt"


@dataclass(frozen=True)
class PreparedSplit:
    images: np.ndarray  # uint8 (N, H, W, 3), memory-mapped
    labels: np.ndarray  # int64 (N,)
    sha256: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def open_prepared_split(prepared_dir: Path, split: str) -> PreparedSplit:
    folder = prepared_dir / split
    images = np.load(folder / IMAGES_FILE, mmap_mode="r")
    labels = np.load(folder / LABELS_FILE)
    sha256 = tuple((folder / SHA256_FILE).read_text().split())
    if not (len(images) == len(labels) == len(sha256)):
        raise ValueError(f"{folder}: images, labels and sha256.txt differ in length")
    return PreparedSplit(images=images, labels=labels, sha256=sha256)


def require_split(prepared_dir: Path, split: str) -> PreparedSplit:
    """`open_prepared_split` for the stages after prepare: a missing split is a user error."""
    try:
        return open_prepared_split(prepared_dir, split)
    except FileNotFoundError:
        raise VisionloopError(
            f"{prepared_dir / split}: prepared split not found; run the prepare stage first"
        ) from None


def write_prepared_split(
    prepared_dir: Path, split: str, images: np.ndarray, labels: np.ndarray, sha256: list[str]
) -> Path:
    """Write one split whole: built in a temporary folder, then moved into place."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if not (len(images) == len(labels) == len(sha256)):
        raise ValueError("images, labels and sha256 differ in length")
    return write_prepared_chunks(prepared_dir, split, [images], images.shape[1:], labels, sha256)


def write_prepared_chunks(
    prepared_dir: Path,
    split: str,
    chunks: Iterable[np.ndarray],
    image_shape: tuple[int, ...],
    labels: np.ndarray,
    sha256: list[str],
) -> Path:
    """`write_prepared_split` with the images given as consecutive chunks: memory holds one
    chunk, whatever the number of images."""
    if len(image_shape) != 3 or image_shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got image shape {image_shape}")
    if len(labels) != len(sha256):
        raise ValueError("images, labels and sha256 differ in length")
    prepared_dir.mkdir(parents=True, exist_ok=True)
    target = prepared_dir / split
    with staged_dir(target) as staging:
        write_npy_chunks(staging / IMAGES_FILE, chunks, (len(sha256), *image_shape))
        np.save(staging / LABELS_FILE, np.asarray(labels, dtype=np.int64))
        (staging / SHA256_FILE).write_text("".join(f"{h}\n" for h in sha256))
    return target


def write_npy_chunks(path: Path, chunks: Iterable[np.ndarray], shape: tuple[int, ...]) -> None:
    """A uint8 .npy file of `shape` (what np.load reads, with mmap), from consecutive chunks."""
    header = {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": shape}
    rows = 0
    with path.open("wb") as handle:
        np.lib.format.write_array_header_1_0(handle, header)
        for chunk in chunks:
            if chunk.dtype != np.uint8 or chunk.shape[1:] != shape[1:]:
                raise ValueError(f"a chunk of {chunk.dtype} {chunk.shape}, expected uint8 {shape}")
            handle.write(np.ascontiguousarray(chunk).data)
            rows += len(chunk)
    if rows != shape[0]:
        raise ValueError("images, labels and sha256 differ in length")


def write_stats(prepared_dir: Path, stats: dict[str, Any]) -> None:
    write_json_atomic(prepared_dir / STATS_FILE, stats)


def read_stats(prepared_dir: Path) -> dict[str, Any] | None:
    """stats.json, or None where prepare wrote none (a cache made by other means)."""
    path = prepared_dir / STATS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def normalisation_stats(
    prepared_dir: Path, train: PreparedSplit
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std: stats.json's when present, else computed from `train`."""
    path = prepared_dir / STATS_FILE
    stats = json.loads(path.read_text()) if path.exists() else channel_stats(train.images)
    return tuple(map(float, stats["mean"])), tuple(map(float, stats["std"]))


def channel_stats(images: np.ndarray, chunk: int = 4096) -> dict[str, list[float]]:
    """Per-channel mean and std on 0..1 pixels, exact, from histograms of the uint8 memmap.

    A constant channel gets std 1, so normalising never divides by zero.
    """
    histogram = ChannelHistogram()
    for start in range(0, len(images), chunk):
        histogram.add(images[start : start + chunk])
    return histogram.stats()


class ChannelHistogram:
    """Counts of each uint8 level per channel, added to a block of images at a time."""

    def __init__(self) -> None:
        self.counts = np.zeros((3, 256), dtype=np.int64)

    def add(self, block: np.ndarray) -> np.ndarray:
        for channel in range(3):
            self.counts[channel] += np.bincount(block[..., channel].ravel(), minlength=256)
        return block

    def stats(self) -> dict[str, list[float]]:
        count = self.counts.sum(axis=1)
        if not count.all():
            raise VisionloopError(
                "the train split is empty; add data or raise split.fractions.train"
            )
        levels = np.arange(256) / 255.0
        mean = self.counts @ levels / count
        std = np.sqrt(np.maximum(self.counts @ levels**2 / count - mean**2, 0.0))
        std = np.where(std > 1e-6, std, 1.0)
        return {"mean": [float(m) for m in mean], "std": [float(s) for s in std]}
