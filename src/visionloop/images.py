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


def fit_square(image: Image.Image, size: int, mode: str = "crop") -> Image.Image:
    """Resize an RGB image to size x size: the one resize rule of prepare and serving.

    crop: the shorter side becomes `size`, then the centre is cut out (no distortion, the
    edges of long images are lost); pad: the longer side becomes `size` and the rest is
    filled with ALPHA_BACKGROUND (nothing lost, the object gets smaller); stretch: both sides
    become `size` (the aspect ratio changes). Lanczos resampling, which antialiases when
    shrinking. An image already at size x size is returned unchanged.
    """
    if image.size == (size, size):
        return image
    width, height = image.size
    if mode == "stretch":
        return image.resize((size, size), Image.Resampling.LANCZOS)
    if mode == "crop":
        scale = size / min(width, height)
    elif mode == "pad":
        scale = size / max(width, height)
    else:
        raise ValueError(f"unknown resize mode {mode!r} (expected crop, pad or stretch)")
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    resized = image.resize(new_size, Image.Resampling.LANCZOS)
    if mode == "crop":
        left, top = (new_size[0] - size) // 2, (new_size[1] - size) // 2
        return resized.crop((left, top, left + size, top + size))
    canvas = Image.new("RGB", (size, size), ALPHA_BACKGROUND)
    canvas.paste(resized, ((size - new_size[0]) // 2, (size - new_size[1]) // 2))
    return canvas


def load_for_model(source: Path | bytes, size: int, mode: str = "crop") -> np.ndarray:
    """Decode with `open_rgb`, resize with `fit_square`: uint8 (size, size, 3), as trained on."""
    return np.asarray(fit_square(open_rgb(source), size, mode), dtype=np.uint8)
