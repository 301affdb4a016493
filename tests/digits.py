"""The demo digits as a real prepared cache (what ingest + split + prepare produce), for the
training tests and bench/train.py: Lanczos-upscaled like `visionloop data demo`, a
deterministic stratified split, a class map."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from visionloop.artifacts.prepared import write_prepared_split
from visionloop.data.demo import load_digits_uint8


def digits_rgb(size: int) -> tuple[np.ndarray, np.ndarray]:
    """All 1,797 digits as uint8 (N, size, size, 3) and their labels."""
    pixels, labels = load_digits_uint8()
    upscaled = [
        np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.LANCZOS))
        for p in pixels
    ]
    grey = np.stack(upscaled)
    return np.repeat(grey[..., None], 3, axis=-1), labels


def stratified_split(
    labels: np.ndarray, fractions: tuple[float, float, float], seed: int
) -> dict[str, np.ndarray]:
    """Indices of train/val/test: each class shuffled and cut at the same fractions."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[int]] = {"train": [], "val": [], "test": []}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        cuts = np.rint(np.cumsum(fractions)[:2] * len(members)).astype(int)
        for name, chunk in zip(parts, np.split(members, cuts), strict=True):
            parts[name].extend(chunk.tolist())
    return {name: np.sort(np.asarray(idx, dtype=np.int64)) for name, idx in parts.items()}


def write_digits_cache(
    root: Path,
    size: int = 32,
    per_class: int | None = None,
    fractions: tuple[float, float, float] = (0.70, 0.15, 0.15),
    seed: int = 0,
) -> dict[str, Path]:
    """Write root/raw/classes.json and root/prepared/{train,val,test}; per_class caps the
    images taken from each class (tiny caches for fast tests)."""
    images, labels = digits_rgb(size)
    if per_class is not None:
        keep = np.concatenate([np.flatnonzero(labels == c)[:per_class] for c in range(10)])
        images, labels = images[np.sort(keep)], labels[np.sort(keep)]
    raw_dir, prepared_dir = root / "raw", root / "prepared"
    raw_dir.mkdir(parents=True, exist_ok=True)
    classes = {"version": 1, "classes": [str(c) for c in range(10)]}
    (raw_dir / "classes.json").write_text(json.dumps(classes))
    for name, idx in stratified_split(labels, fractions, seed).items():
        hashes = [hashlib.sha256(images[i].tobytes()).hexdigest() for i in idx]
        write_prepared_split(prepared_dir, name, images[idx], labels[idx], hashes)
    return {"raw_dir": raw_dir, "prepared_dir": prepared_dir}
