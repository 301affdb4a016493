"""Real demo data with nothing downloaded: scikit-learn's handwritten digits as image drops.

The 1,797 8x8 digits ship inside scikit-learn. They are written as PNG files in
class-named folders, upscaled with a Lanczos filter, and cut into one initial drop and
later drops so that the retraining story can be shown end to end. The output is a pure
function of the seed and the size: the same bytes on every run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from visionloop.atomic import staged_dir
from visionloop.config import DemoConfig

DIGITS_MAX_VALUE = 16  # load_digits() pixels are integers 0..16


@dataclass(frozen=True)
class DemoDrop:
    name: str
    path: Path
    per_class: dict[str, int]

    @property
    def count(self) -> int:
        return sum(self.per_class.values())


def load_digits_uint8() -> tuple[np.ndarray, np.ndarray]:
    """The digits as (N, 8, 8) uint8 images spanning 0..255, and their integer labels."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pixels = np.rint(digits.images * (255.0 / DIGITS_MAX_VALUE)).astype(np.uint8)
    return pixels, digits.target.astype(np.int64)


def drop_assignment(n: int, fractions: tuple[float, ...], seed: int) -> np.ndarray:
    """Drop number for each of n images: a seeded shuffle cut at the cumulative fractions."""
    if not fractions or any(f <= 0 for f in fractions):
        raise ValueError("drop fractions must be positive")
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.rint(np.cumsum(fractions) / sum(fractions) * n).astype(int)
    assignment = np.empty(n, dtype=np.int64)
    start = 0
    for drop, stop in enumerate(bounds):
        assignment[order[start:stop]] = drop
        start = stop
    return assignment


def drop_name(number: int) -> str:
    return f"digits-{number + 1:03d}"


def write_demo_drops(out_dir: Path, demo: DemoConfig) -> list[DemoDrop]:
    """Write every demo drop under out_dir, each one appearing whole (built aside, then renamed)."""
    images, labels = load_digits_uint8()
    assignment = drop_assignment(len(images), demo.drop_fractions, demo.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    drops = []
    for number in range(len(demo.drop_fractions)):
        members = np.flatnonzero(assignment == number)
        name = drop_name(number)
        per_class = _write_drop_atomically(out_dir / name, images, labels, members, demo.image_size)
        drops.append(DemoDrop(name=name, path=out_dir / name, per_class=per_class))
    return drops


def _write_drop_atomically(
    target: Path, images: np.ndarray, labels: np.ndarray, members: np.ndarray, size: int
) -> dict[str, int]:
    per_class: dict[str, int] = {}
    with staged_dir(target) as staging:
        for index in members:
            label = str(labels[index])
            (staging / label).mkdir(exist_ok=True)
            upscaled = Image.fromarray(images[index]).resize((size, size), Image.Resampling.LANCZOS)
            upscaled.save(staging / label / f"digit-{index:04d}.png", optimize=False)
            per_class[label] = per_class.get(label, 0) + 1
    return dict(sorted(per_class.items(), key=lambda kv: int(kv[0])))
