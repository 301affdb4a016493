"""Small real models for the gate and registry tests: simple_cnn trained briefly on real digits.

Trained once per test session (a few seconds on 2 cores) and saved as bundles; each test
copies the one it needs to its own train.dir.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch

from visionloop.artifacts.bundle import BundleMeta, save_bundle
from visionloop.data.demo import load_digits_uint8
from visionloop.models.zoo import build_model

IMAGE_SIZE = 16  # the 8x8 digits, upscaled 2x
TEST_SIZE = 300
CLASSES = tuple(str(d) for d in range(10))
META = BundleMeta("simple_cnn", CLASSES, IMAGE_SIZE, (0.2, 0.2, 0.2), (0.3, 0.3, 0.3))


def digits_rgb() -> tuple[np.ndarray, np.ndarray]:
    """All digits as uint8 (N, 16, 16, 3), a fixed order with the test images first."""
    pixels, labels = load_digits_uint8()
    order = np.random.default_rng(0).permutation(len(labels))
    upscaled = pixels[order].repeat(2, axis=1).repeat(2, axis=2)
    return np.repeat(upscaled[..., None], 3, axis=-1), labels[order]


def train(
    images: np.ndarray, labels: np.ndarray, snapshots: tuple[int, ...], seed: int
) -> list[torch.nn.Module]:
    """One training run; a copy of the model after each number of steps in `snapshots`."""
    torch.manual_seed(seed)
    model = build_model("simple_cnn", num_classes=len(CLASSES), image_size=IMAGE_SIZE)
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-3)
    mean = torch.tensor(META.mean).view(1, 3, 1, 1)
    std = torch.tensor(META.std).view(1, 3, 1, 1)
    inputs = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - mean) / std
    targets = torch.from_numpy(labels)
    generator = torch.Generator().manual_seed(seed)
    taken = []
    for step in range(1, max(snapshots) + 1):
        model.train()
        batch = torch.randint(0, len(targets), (64,), generator=generator)
        loss = torch.nn.functional.cross_entropy(model(inputs[batch]), targets[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step in snapshots:
            taken.append(copy.deepcopy(model).eval())
    return taken


def scaled_logits(model: torch.nn.Module, factor: float) -> torch.nn.Module:
    """The same predictions (argmax) with other probabilities: a different model, equal top-1."""
    last = model.classifier[-1]
    with torch.no_grad():
        last.weight.mul_(factor)
        last.bias.mul_(factor)
    return model


def train_bundles(out_dir: Path) -> dict[str, Path]:
    """weak (few steps), good (more steps), equal (weak, rescaled), shuffled (random labels)."""
    images, labels = digits_rgb()
    train_images, train_labels = images[TEST_SIZE:], labels[TEST_SIZE:]
    shuffled = np.random.default_rng(1).permutation(train_labels)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny batches: one thread is ~4x faster on a busy 2-core machine
    try:
        weak, good = train(train_images, train_labels, snapshots=(15, 150), seed=0)
        (noise,) = train(train_images, shuffled, snapshots=(20,), seed=0)
    finally:
        torch.set_num_threads(threads)
    models = {"weak": weak, "good": good, "shuffled": noise}
    models["equal"] = scaled_logits(copy.deepcopy(models["weak"]), 2.0)
    return {name: save_bundle(out_dir / name, model, META) for name, model in models.items()}


def test_split() -> tuple[np.ndarray, np.ndarray, list[str]]:
    images, labels = digits_rgb()
    return images[:TEST_SIZE], labels[:TEST_SIZE], [f"digit{i:04d}" for i in range(TEST_SIZE)]
