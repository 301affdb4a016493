"""Decoding and normalising one image: the single rule used by ingest, prepare and serving.

Every consumer goes through `open_rgb` so that EXIF orientation, alpha, palette, CMYK,
16-bit and multi-frame files are handled the same way at ingest, at training and at
prediction time.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Transparent pixels are composited on this fixed background, never dropped to black at random.
ALPHA_BACKGROUND = (255, 255, 255)


def open_rgb(source: Path | bytes) -> Image.Image:
    """Decode fully and return an upright 8-bit RGB image (first frame of a multi-frame file)."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        image.seek(0)
        image.load()
        upright = ImageOps.exif_transpose(image)
        return to_rgb(upright)


def to_rgb(image: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or losing transparency rules."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        image = _rescale_to_8bit(image)
    if image.mode == "P":
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA"):
        background = Image.new("RGB", image.size, ALPHA_BACKGROUND)
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return background
    return image.convert("RGB")


def _rescale_to_8bit(image: Image.Image) -> Image.Image:
    """16-bit and float images are rescaled by their type's range, never clipped at 255."""
    pixels = np.asarray(image, dtype=np.float64)
    if image.mode == "F":
        low, high = float(pixels.min()), float(pixels.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        pixels = (pixels - low) * scale
    else:
        high = 65535.0 if image.mode.startswith("I;16") or pixels.max() > 255 else 255.0
        pixels = pixels * (255.0 / high)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8))


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Stretch to size x size with a Lanczos filter: how serving brings an image to the bundle.

    Kept beside open_rgb so prepare and serving can share it; if prepare settles on another
    rule (crop, pad), this is the one function to change.
    """
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.LANCZOS)


def images_to_uint8(images: list[Image.Image], size: int) -> np.ndarray:
    """RGB images of any size -> one uint8 (N, size, size, 3) batch."""
    batch = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        batch[index] = np.asarray(resize_square(to_rgb(image), size))
    return batch


def fit_batch(images: np.ndarray, size: int) -> np.ndarray:
    """A uint8 (N, H, W, 3) batch at size x size: unchanged when it already is, else resized."""
    if images.shape[1:3] == (size, size):
        return images
    return images_to_uint8([Image.fromarray(np.asarray(image)) for image in images], size)
