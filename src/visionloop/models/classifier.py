"""A network with its preprocessing, loaded from a bundle: uint8 images in, probabilities out.

Evaluation, the gate, the registry's smoke test, the MLflow pyfunc model and every serving
runtime (torch, ONNX, int8) predict through `predict_with`: the one rule that checks the
batch, normalises it (`model_input`), applies the bundle's test-time augmentation and turns
logits into probabilities. Only the function that maps a normalised batch to logits differs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from visionloop.artifacts.bundle import BundleDamaged, BundleMeta, read_meta, read_weights
from visionloop.errors import first_line
from visionloop.models.zoo import build_model

# A normalised float32 (N, 3, H, W) batch -> logits (N, classes), on the CPU.
LogitsFn = Callable[[torch.Tensor], torch.Tensor]


def check_batch(images: np.ndarray, size: int) -> None:
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(
            f"expected uint8 images of shape (N, {size}, {size}, 3), "
            f"got {images.dtype} {images.shape}"
        )


def model_input(images: np.ndarray, meta: BundleMeta, device: str = "cpu") -> torch.Tensor:
    """uint8 (N, H, W, 3) at the bundle's image size -> normalised float (N, 3, H, W)."""
    check_batch(images, meta.image_size)
    # A copy: the batch may be a read-only memmap slice, which torch will not wrap.
    batch = torch.from_numpy(np.array(images, dtype=np.uint8)).to(device)
    batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(meta.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(meta.std, device=device).view(1, 3, 1, 1)
    return (batch - mean) / std


def predict_with(
    logits_of: LogitsFn, images: np.ndarray, meta: BundleMeta, batch_size: int, device: str = "cpu"
) -> np.ndarray:
    """Class probabilities (N, classes) float32, `batch_size` images per call of `logits_of`.

    With the bundle's `tta: flip`, each image's probabilities are averaged with those of its
    horizontal mirror (bundles without the field predict the image alone).
    """
    check_batch(images, meta.image_size)
    flip = meta.tta == "flip"
    outputs = []
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = model_input(images[start : start + batch_size], meta, device)
            probs = torch.softmax(logits_of(batch).float(), dim=1)
            if flip:
                probs = (probs + torch.softmax(logits_of(batch.flip(3)).float(), dim=1)) / 2
            outputs.append(probs.cpu())
    if not outputs:
        return np.zeros((0, len(meta.classes)), dtype=np.float32)
    return torch.cat(outputs).numpy().astype(np.float32)


class Classifier:
    def __init__(self, module: nn.Module, meta: BundleMeta, device: str = "cpu") -> None:
        self.module = module.to(device).eval()
        self.meta = meta
        self.device = device

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) at the bundle's image size -> normalised float (N, 3, H, W)."""
        return model_input(images, self.meta, self.device)

    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        return predict_with(self.module, images, self.meta, batch_size, self.device)


def load_bundle(folder: Path, device: str = "cpu") -> Classifier:
    """The bundle as a Classifier; BundleDamaged, in one line, when its files cannot be read
    as a bundle (truncated or foreign weights, a pickle payload, broken model.json)."""
    import pickle

    try:
        meta = read_meta(folder)
        module = build_model(meta.arch, num_classes=len(meta.classes), image_size=meta.image_size)
        module.load_state_dict(read_weights(folder))
    except (OSError, RuntimeError, EOFError, ValueError, TypeError, KeyError) as exc:
        detail = first_line(exc)
        raise BundleDamaged(f"{folder}: the model bundle cannot be loaded ({detail})") from None
    except pickle.UnpicklingError as exc:
        detail = first_line(exc)
        raise BundleDamaged(f"{folder}: weights.pt is not plain tensors ({detail})") from None
    return Classifier(module, meta, device=device)
