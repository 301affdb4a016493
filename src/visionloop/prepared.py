"""The prepared tensor cache's file format: what `prepare` writes and training reads.

One folder per split under `prepare.dir`: `images.npy` (uint8, N x H x W x 3, read with
mmap so memory stays bounded), `labels.npy` (int64 class indices from the class map) and
`sha256.txt` (one content hash per row, the same order).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from visionloop.atomic import staged_dir

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class PreparedSplit:
    images: np.ndarray  # uint8 (N, H, W, 3), memory-mapped
    labels: np.ndarray  # int64 (N,)
    sha256: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.labels)


def open_prepared_split(prepared_dir: Path, split: str) -> PreparedSplit:
    folder = prepared_dir / split
    images = np.load(folder / "images.npy", mmap_mode="r")
    labels = np.load(folder / "labels.npy")
    sha256 = tuple((folder / "sha256.txt").read_text().split())
    if not (len(images) == len(labels) == len(sha256)):
        raise ValueError(f"{folder}: images, labels and sha256.txt differ in length")
    return PreparedSplit(images=images, labels=labels, sha256=sha256)


def write_prepared_split(
    prepared_dir: Path, split: str, images: np.ndarray, labels: np.ndarray, sha256: list[str]
) -> Path:
    """Write one split whole: built in a temporary folder, then moved into place."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    if not (len(images) == len(labels) == len(sha256)):
        raise ValueError("images, labels and sha256 differ in length")
    prepared_dir.mkdir(parents=True, exist_ok=True)
    target = prepared_dir / split
    with staged_dir(target) as staging:
        np.save(staging / "images.npy", np.ascontiguousarray(images))
        np.save(staging / "labels.npy", np.asarray(labels, dtype=np.int64))
        (staging / "sha256.txt").write_text("".join(f"{h}\n" for h in sha256))
    return target
