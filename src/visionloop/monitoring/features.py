"""What the model sees: its penultimate-layer embedding and its probabilities, in one pass.

The embedding is the input of the architecture's head (`models.zoo.head_name`): the one
rule that holds for every network of the zoo (a linear layer fed with pooled features).
It is read with a forward pre-hook, so nothing about the network changes. Probabilities
here are those of the image alone (no test-time augmentation), the same for the reference
and the images compared with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from visionloop.models.classifier import Classifier


@dataclass(frozen=True)
class Seen:
    embeddings: np.ndarray  # (N, D) float32
    probs: np.ndarray  # (N, classes) float32

    @property
    def confidence(self) -> np.ndarray:
        """The maximum softmax probability of each image."""
        return self.probs.max(axis=1) if len(self.probs) else np.zeros(0, np.float32)

    def __len__(self) -> int:
        return len(self.probs)


def head_module(classifier: Classifier) -> torch.nn.Module:
    from visionloop.models.zoo import head_name

    return classifier.module.get_submodule(head_name(classifier.meta.arch))


def embed(classifier: Classifier, images: np.ndarray, batch_size: int = 256) -> Seen:
    """uint8 (N, H, W, 3) at the bundle's size -> embeddings and probabilities."""
    # torch here, not with the module: the flows import this one (through the drop checks),
    # and its 2-3 s delayed every flow-run process, the watcher's and monitor's included.
    import torch

    captured: list[torch.Tensor] = []

    def keep_input(_module, inputs):
        captured.append(torch.flatten(inputs[0], 1).float().cpu())

    handle = head_module(classifier).register_forward_pre_hook(keep_input)
    probs = []
    try:
        with torch.inference_mode():
            for start in range(0, len(images), batch_size):
                batch = classifier.to_input(images[start : start + batch_size])
                probs.append(torch.softmax(classifier.module(batch).float(), dim=1).cpu())
    finally:
        handle.remove()
    if not probs:
        classes = len(classifier.meta.classes)
        return Seen(np.zeros((0, 0), np.float32), np.zeros((0, classes), np.float32))
    return Seen(torch.cat(captured).numpy(), torch.cat(probs).numpy())


def embed_files(
    classifier: Classifier, sources: list, batch_size: int = 256
) -> tuple[Seen, list[int], list[str]]:
    """Decode and embed image files (paths or bytes) a batch at a time, so memory stays
    bounded however many there are: (what was seen, indices of the readable sources, one
    line per unreadable one)."""
    from visionloop.images import load_for_model

    meta = classifier.meta
    parts, kept, left = [], [], []
    for start in range(0, len(sources), batch_size):
        batch = []
        for index in range(start, min(start + batch_size, len(sources))):
            try:
                batch.append(load_for_model(sources[index], meta.image_size, meta.resize))
                kept.append(index)
            except (OSError, ValueError, SyntaxError) as exc:  # Pillow's errors for junk
                left.append(f"{sources[index]}: not a readable image ({exc})")
        if batch:
            parts.append(embed(classifier, np.stack(batch), batch_size))
    if not parts:
        return (
            embed(classifier, np.zeros((0, meta.image_size, meta.image_size, 3), np.uint8)),
            [],
            left,
        )
    seen = Seen(
        np.concatenate([p.embeddings for p in parts]), np.concatenate([p.probs for p in parts])
    )
    return seen, kept, left
