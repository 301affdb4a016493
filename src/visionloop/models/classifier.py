"""A network with its preprocessing, loaded from a bundle: uint8 images in, probabilities out.

Evaluation, the gate, the registry's smoke test and the MLflow pyfunc model all predict
through `Classifier.predict_proba`, so every consumer feeds the network the same way.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from visionloop.artifacts.bundle import BundleMeta, read_meta, read_weights
from visionloop.models.zoo import build_model


class Classifier:
    def __init__(self, module: nn.Module, meta: BundleMeta, device: str = "cpu") -> None:
        self.module = module.to(device).eval()
        self.meta = meta
        self.device = device
        self._mean = torch.tensor(meta.mean, device=device).view(1, 3, 1, 1)
        self._std = torch.tensor(meta.std, device=device).view(1, 3, 1, 1)

    def to_input(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, H, W, 3) at the bundle's image size -> normalised float (N, 3, H, W)."""
        size = self.meta.image_size
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[1:] != (size, size, 3):
            raise ValueError(
                f"expected uint8 images of shape (N, {size}, {size}, 3), "
                f"got {images.dtype} {images.shape}"
            )
        # A copy: the batch may be a read-only memmap slice, which torch will not wrap.
        batch = torch.from_numpy(np.array(images, dtype=np.uint8)).to(self.device)
        batch = batch.permute(0, 3, 1, 2).float().div_(255.0)
        return (batch - self._mean) / self._std

    @torch.inference_mode()
    def predict_proba(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
        """Class probabilities, with the bundle's test-time augmentation (meta.tta)."""
        outputs = [
            self._probabilities(self.to_input(images[i : i + batch_size])).cpu()
            for i in range(0, len(images), batch_size)
        ]
        if not outputs:
            return np.zeros((0, len(self.meta.classes)), dtype=np.float32)
        return torch.cat(outputs).numpy().astype(np.float32)

    def _probabilities(self, inputs: torch.Tensor) -> torch.Tensor:
        probs = torch.softmax(self.module(inputs), dim=1)
        if self.meta.tta == "flip":
            probs = (probs + torch.softmax(self.module(inputs.flip(3)), dim=1)) / 2
        return probs


def load_bundle(folder: Path, device: str = "cpu") -> Classifier:
    meta = read_meta(folder)
    module = build_model(meta.arch, num_classes=len(meta.classes), image_size=meta.image_size)
    module.load_state_dict(read_weights(folder))
    return Classifier(module, meta, device=device)
