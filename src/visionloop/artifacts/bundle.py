"""A trained model as a self-describing folder (the bundle), written by training and read by
evaluation, the gate, the registry and serving.

`model.json` says how to rebuild and feed the network (architecture, class names in index
order, input size, normalisation, resize rule, test-time augmentation); `weights.pt` is a
plain state_dict, read with weights_only=True so no pickle from disk is ever executed. The
bundle's identity is `bundle_digest`: a hash over the names and bytes of its files.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visionloop.atomic import staged_dir
from visionloop.errors import VisionloopError

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
    # Test-time augmentation every consumer applies (models.classifier.Classifier):
    # "none", or "flip": the mean of the image's and its mirror image's probabilities.
    tta: str = "none"

    @classmethod
    def from_json(cls, text: str) -> BundleMeta:
        raw = json.loads(text)
        for key in ("classes", "mean", "std"):
            raw[key] = tuple(raw[key])
        return cls(**raw)


class BundleDamaged(VisionloopError):
    """A bundle's files do not hash to the digest recorded for it: never load it."""


def is_bundle(folder: Path) -> bool:
    return (folder / META_FILE).is_file()


def save_bundle(folder: Path, module, meta: BundleMeta) -> Path:
    """Write the bundle whole: built in a temporary sibling folder, then moved into place."""
    import torch

    state = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    buffer = io.BytesIO()  # torch's zip writer to a file reports a full disk as a RuntimeError
    torch.save(state, buffer)
    with staged_dir(folder) as staging:
        (staging / WEIGHTS_FILE).write_bytes(buffer.getvalue())  # ENOSPC is an OSError here
        (staging / META_FILE).write_text(json.dumps(asdict(meta), indent=2) + "\n")
    return folder


def read_meta(folder: Path) -> BundleMeta:
    return BundleMeta.from_json((folder / META_FILE).read_text())


def read_weights(folder: Path) -> dict[str, Any]:
    import torch

    return torch.load(folder / WEIGHTS_FILE, map_location="cpu", weights_only=True)


def bundle_digest(folder: Path) -> str:
    """A content hash of a bundle folder: names and bytes of every file, in a fixed order."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def verify_bundle(folder: Path, expected: str | None, label: str) -> str:
    """The bundle's digest when its files hash to `expected` (the one integrity check before
    any registered model is used); BundleDamaged, in one line, when they do not.

    torch.load does not check a zip's CRCs, so zeroed or flipped weights would otherwise
    load and predict; a missing or truncated file changes the digest as well."""
    digest = bundle_digest(folder) if folder.is_dir() else "(no bundle folder)"
    if not expected:
        raise BundleDamaged(f"{label}: no bundle_sha256 recorded; its files cannot be checked")
    if digest != expected:
        raise BundleDamaged(
            f"{label}: its bundle files hash to {digest[:12]} but bundle_sha256={expected[:12]} "
            "was recorded at registration; the files were changed or damaged after registration"
        )
    return digest
