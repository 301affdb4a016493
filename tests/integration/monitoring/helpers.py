"""Digits drops and a champion for the monitoring tests: the gate tests' "good" simple_cnn
(16 px) and the digits it never saw in training, written as PNG class folders."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from tests.integration.gate.trained import TEST_SIZE, digits_rgb
from visionloop.artifacts.prepared import write_prepared_split
from visionloop.config import Config
from visionloop.models.classifier import load_bundle
from visionloop.monitoring.reference import Watched


def watched(bundles: dict[str, Path]) -> Watched:
    return Watched(load_bundle(bundles["good"]), "local")  # as serving logs a bundle folder


def unseen_digits() -> tuple[np.ndarray, np.ndarray]:
    images, labels = digits_rgb()
    return images[:TEST_SIZE], labels[:TEST_SIZE]


def write_reference(config: Config) -> None:
    """The champion's training images as the prepared train split (the drift reference)."""
    images, labels = digits_rgb()
    train_images, train_labels = images[TEST_SIZE:], labels[TEST_SIZE:]
    shas = [f"{i:064x}" for i in range(len(train_labels))]
    write_prepared_split(config.prepare.dir, "train", train_images, train_labels, shas)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def write_drop(folder: Path, images: np.ndarray, labels: np.ndarray) -> None:
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        target = folder / str(label) / f"{index:04d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(png_bytes(image))


def flip_labels(labels: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels with `share` of them changed to another class; the changed indices."""
    rng = np.random.default_rng(seed)
    flipped = np.sort(rng.choice(len(labels), round(share * len(labels)), replace=False))
    noisy = labels.copy()
    noisy[flipped] = (labels[flipped] + rng.integers(1, 10, len(flipped))) % 10
    return noisy, flipped
