"""Images as they arrive at predict, serve and the MLflow model: bytes -> uint8 at the model's size.

Decoding is ingest's (`screening.screen_image`: format allowlist, pixel cap checked on the
header before decoding, EXIF orientation, modes, sides), and resizing is prepare's
(`images.fit_square` with the bundle's resize rule), so a photo is fed to the model exactly
as training saw the images it learnt from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visionloop.config import Config, IngestConfig
from visionloop.data.ingest.screening import Screened, screen_image
from visionloop.images import fit_square
from visionloop.serving.reasons import BadImage


@dataclass(frozen=True)
class ModelImage:
    pixels: np.ndarray  # uint8 (size, size, 3)
    screened: Screened  # sha256, format, mode, width, height of the file


def image_rules(config: Config) -> IngestConfig:
    """Ingest's rules with serving's pixel cap (a server may want a lower one than ingest)."""
    return config.data.ingest.model_copy(update={"max_pixels": config.serving.limits.max_pixels})


def rules_as_dict(rules: IngestConfig) -> dict:
    """What the MLflow model needs to apply the same rules where no params.yaml exists."""
    return {
        "formats": list(rules.formats),
        "max_pixels": rules.max_pixels,
        "min_side": rules.min_side,
        "max_side": rules.max_side,
    }


def to_model_image(data: bytes, size: int, resize: str, rules: IngestConfig) -> ModelImage:
    """Decode one encoded image and resize it to size x size by the bundle's rule, or raise
    BadImage with ingest's reason code."""
    screened, image = screen_image(data, rules)
    if image is None:
        raise BadImage(screened.reason or "corrupt", screened.detail or "cannot be decoded")
    pixels = np.asarray(fit_square(image, size, resize), dtype=np.uint8)
    return ModelImage(pixels, screened)


def stack(images: list[np.ndarray], size: int) -> np.ndarray:
    """uint8 (N, size, size, 3); an empty list gives an empty batch of the right shape."""
    if not images:
        return np.zeros((0, size, size, 3), dtype=np.uint8)
    return np.stack(images)
