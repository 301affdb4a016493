"""Test data through the real ingest: generated images written as a drop, then ingested.

`add_drop` writes (label, image) pairs as a drop folder of class-named folders and takes
it in with `visionloop.ingest.ingest_drops`, exactly as `visionloop data ingest` would, so
the split and prepare stages are tested on what ingest really writes.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from PIL import Image

from visionloop.config import Config

EXTENSIONS = {"PNG": "png", "JPEG": "jpg"}


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def pattern_image(seed: int, size: int = 32, mode: str = "RGB") -> Image.Image:
    """A random blocky picture: distinct seeds give perceptually distinct images."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)
    return image.convert(mode)


def near_copy(image: Image.Image, shift: int = 3) -> Image.Image:
    """The same picture, slightly brighter: different bytes, same perceptual hash (nearly)."""
    pixels = np.asarray(image, dtype=np.int16) + shift
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_drop(
    folder: Path, images: Iterable[tuple[str, Image.Image]], fmt: str = "PNG"
) -> list[str]:
    """A drop folder of class-named folders; returns each image's sha256, in order."""
    shas = []
    for index, (label, image) in enumerate(images):
        data = encode(image, fmt)
        path = folder / label / f"{index:06d}.{EXTENSIONS[fmt]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        shas.append(hashlib.sha256(data).hexdigest())
    return shas


def add_drop(
    config: Config, name: str, images: Iterable[tuple[str, Image.Image]], fmt: str = "PNG"
) -> list[str]:
    """Write the images as drop `name` in data.incoming_dir and ingest it (new classes allowed)."""
    from visionloop.data.ingest import ingest_drops

    shas = write_drop(config.data.incoming_dir / name, images, fmt)
    result = ingest_drops(config, [name], allow_new_classes=True)
    assert not result.problems(), result.problems()
    return shas
