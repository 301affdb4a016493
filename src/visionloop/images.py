"""Decoding and normalising one image: the single rule used by ingest, prepare and serving.

Every consumer goes through `open_rgb` (or `decode`, which also says what it did) so that
EXIF orientation, alpha, palette, CMYK, 16-bit and multi-frame files are handled the same
way at ingest, at training and at prediction time.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

# Transparent pixels are composited on this fixed background, never dropped to black at random.
ALPHA_BACKGROUND = (255, 255, 255)
EXIF_ORIENTATION = 0x0112
_HIGH_BIT_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I", "F")
_ALPHA_MODES = ("RGBA", "LA", "PA")
# Pillow format name -> extension of a file stored by content (raw store, serving's store).
EXTENSIONS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif"}


class FormatNotAllowed(ValueError):
    """The file is a real image, but in a format the caller does not accept."""


@dataclass(frozen=True)
class Decoded:
    """An upright 8-bit RGB image and the facts about its source file."""

    image: Image.Image
    format: str  # Pillow's format name: JPEG, PNG, WEBP, BMP, ...
    mode: str  # the file's own mode before normalisation (RGB, L, P, RGBA, I;16, CMYK, ...)
    frames: int
    orientation: int  # EXIF orientation tag, 1 when absent
    steps: tuple[str, ...]  # normalisation applied, in order (see NORMALISATION_STEPS)


# What `decode` may record in Decoded.steps (and ingest writes to the manifest).
NORMALISATION_STEPS = {
    "first_frame": "multi-frame file: the first frame is used",
    "exif_orientation": "rotated/flipped upright by the EXIF orientation tag",
    "rescale_high_bit_depth": "16-bit or float pixels rescaled by their range to 8 bits",
    "palette": "palette expanded to colours",
    "alpha_composited": "transparency composited on a white background",
    "to_rgb": "converted to RGB (grey, CMYK, YCbCr, ...)",
}


def open_rgb(source: Path | bytes) -> Image.Image:
    """Decode fully and return an upright 8-bit RGB image (first frame of a multi-frame file)."""
    return decode(source).image


def decode(
    source: Path | bytes,
    *,
    max_pixels: int | None = None,
    formats: Collection[str] | None = None,
) -> Decoded:
    """Decode fully, checking the header first: `formats` allowlist and `max_pixels` cap.

    Raises what Pillow raises (UnidentifiedImageError, OSError for truncated or broken
    data, DecompressionBombError, ValueError, SyntaxError for some broken PNGs), plus
    DecompressionBombError when width x height exceeds `max_pixels`, and FormatNotAllowed.
    """
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
        if formats is not None and image.format not in formats:
            raise FormatNotAllowed(f"format {image.format} is not in {sorted(formats)}")
        width, height = image.size
        if max_pixels is not None and width * height > max_pixels:
            raise Image.DecompressionBombError(
                f"{width}x{height} = {width * height} pixels exceeds the cap of {max_pixels}"
            )
        frames = getattr(image, "n_frames", 1)
        image.seek(0)
        image.load()
        orientation = image.getexif().get(EXIF_ORIENTATION, 1)
        upright = ImageOps.exif_transpose(image)
        steps = ["first_frame"] if frames > 1 else []
        if orientation not in (1, None):
            steps.append("exif_orientation")
        rgb = to_rgb(upright, steps)
        return Decoded(rgb, image.format or "", image.mode, frames, orientation or 1, tuple(steps))


def to_rgb(image: Image.Image, steps: list[str] | None = None) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB without clipping or losing transparency rules.

    When `steps` is given, the names of the conversions applied are appended to it.
    """
    done = steps if steps is not None else []
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        image = _rescale_to_8bit(image)
        done.append("rescale_high_bit_depth")
    if image.mode == "P":
        # Only a palette with a transparent entry needs compositing; the pixels of an
        # opaque one come out the same either way.
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
        done.append("palette")
    if image.mode in _ALPHA_MODES:
        background = Image.new("RGB", image.size, ALPHA_BACKGROUND)
        background.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        done.append("alpha_composited")
        return background
    if image.mode != "RGB":
        done.append("to_rgb")
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


def images_to_uint8(images: list[Image.Image], size: int, mode: str = "crop") -> np.ndarray:
    """Images of any size and mode -> one uint8 (N, size, size, 3) batch, by `fit_square`."""
    batch = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for index, image in enumerate(images):
        batch[index] = np.asarray(fit_square(to_rgb(image), size, mode))
    return batch


def fit_batch(images: np.ndarray, size: int, mode: str = "crop") -> np.ndarray:
    """A uint8 (N, H, W, 3) batch at size x size: unchanged when it already is, else resized."""
    if images.shape[1:3] == (size, size):
        return images
    return images_to_uint8([Image.fromarray(np.asarray(image)) for image in images], size, mode)
