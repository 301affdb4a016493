"""A trained model as a self-describing folder: what training writes and everything else loads.

`model.json` says how to rebuild and feed the network (architecture, class names in index
order, input size, normalisation); `weights.pt` is a plain state_dict, loaded with
weights_only=True so no pickle from disk is ever executed.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from visionloop.atomic import staged_dir
from visionloop.models import build_model

META_FILE = "model.json"
WEIGHTS_FILE = "weights.pt"


@dataclass(frozen=True)
class BundleMeta:
    arch: str
    classes: tuple[str, ...]  # class names in index order (the class map)
    image_size: int
    mean: tuple[float, float, float]  # per-channel, on 0..1 pixels
    std: tuple[float, float, float]
    class_map_version: int = 1
    resize: str = "crop"  # images.fit_square's mode, as prepare used it (serving must match)

    @classmethod
    def from_json(cls, text: str) -> BundleMeta:
        raw = json.loads(text)
        for key in ("classes", "mean", "std"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


class Classifier:
    """A network with its preprocessing: uint8 images in, class probabilities out."""

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
        outputs = [
            torch.softmax(self.module(self.to_input(images[i : i + batch_size])), dim=1).cpu()
            for i in range(0, len(images), batch_size)
        ]
        if not outputs:
            return np.zeros((0, len(self.meta.classes)), dtype=np.float32)
        return torch.cat(outputs).numpy().astype(np.float32)


def save_bundle(folder: Path, module: nn.Module, meta: BundleMeta) -> Path:
    """Write the bundle whole: built in a temporary sibling folder, then moved into place."""
    with staged_dir(folder) as staging:
        state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        torch.save(state, staging / WEIGHTS_FILE)
        (staging / META_FILE).write_text(json.dumps(asdict(meta), indent=2) + "\n")
    return folder


def load_bundle(folder: Path, device: str = "cpu") -> Classifier:
    meta = BundleMeta.from_json((folder / META_FILE).read_text())
    module = build_model(meta.arch, num_classes=len(meta.classes), image_size=meta.image_size)
    state = torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    module.load_state_dict(state)
    return Classifier(module, meta, device=device)
