"""Why the model said what it said: Grad-CAM (captum's LayerGradCam) heat maps.

The target layer of each architecture is its last feature map that is still spatial at the
model's input size (`TARGET_LAYERS`, candidates per name of `models.zoo.ZOO`, each tested):
late enough to be about classes, fine enough to say where. The map is upsampled to the
input and laid over the image, red where the evidence for the explained class lies.

- `error_grid`: evaluate's worst errors per class (most confident wrong answers), one row
  per class, as one PNG in reports/evaluate/plots/ (and so in the MLflow run).
- `explain_files` (`visionloop explain IMAGE...`): one overlay PNG per image.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from visionloop.atomic import write_bytes_atomic
from visionloop.models.classifier import Classifier

# architecture -> candidate layers, latest first: Grad-CAM weighs the first whose feature map
# is at least MIN_SIDE px on a side at the model's input size (a 1x1 map says nothing about
# where: resnet18's layer4 at 32 px input).
TARGET_LAYERS = {
    "simple_cnn": ("features.4",),  # the second conv block's ReLU, before its pooling
    "small_resnet": ("layers.3", "layers.2", "layers.1"),
    "alexnet": ("features.11", "features.7", "features.4"),
    "vgg11_bn": ("features.27", "features.20", "features.13"),
    "resnet18": ("layer4", "layer3", "layer2"),
    "resnet34": ("layer4", "layer3", "layer2"),
    "resnet50": ("layer4", "layer3", "layer2"),
    "mobilenet_v3_small": ("features", "features.8", "features.3"),
    "mobilenet_v3_large": ("features", "features.12", "features.6"),
    "efficientnet_b0": ("features", "features.5", "features.3"),
    "googlenet": ("inception5b", "inception4e", "inception3b"),
}
MIN_SIDE = 4
PANEL = 128  # px per panel side: small inputs (32 px) are enlarged to be seen


def target_layer_name(classifier: Classifier) -> str:
    """The latest candidate layer with a map of at least MIN_SIDE px (else the largest)."""
    arch = classifier.meta.arch
    if arch not in TARGET_LAYERS:
        raise ValueError(f"no Grad-CAM layer chosen for architecture {arch!r}")
    sides = _map_sides(classifier, TARGET_LAYERS[arch])
    fitting = [name for name in TARGET_LAYERS[arch] if sides[name] >= MIN_SIDE]
    return fitting[0] if fitting else max(sides, key=sides.get)


def _map_sides(classifier: Classifier, names: Sequence[str]) -> dict[str, int]:
    sides: dict[str, int] = {}

    def recorder(name: str):
        def record(_module, _inputs, output) -> None:  # None: the output stays as it is
            sides.setdefault(name, int(output.shape[-1]))

        return record

    handles = [
        classifier.module.get_submodule(name).register_forward_hook(recorder(name))
        for name in names
    ]
    size = classifier.meta.image_size
    try:
        with torch.inference_mode():
            classifier.module(torch.zeros(1, 3, size, size, device=classifier.device))
    finally:
        for handle in handles:
            handle.remove()
    return sides


def grad_cam(
    classifier: Classifier,
    images: np.ndarray,
    targets: Sequence[int],
    batch_size: int = 32,
    positive_only: bool = True,
) -> np.ndarray:
    """(N, H, W) float maps in 0..1 at the input size: where the evidence for `targets` is
    (Grad-CAM's ReLU keeps only evidence for the class; positive_only=False keeps all)."""
    from captum.attr import LayerAttribution, LayerGradCam

    layer = classifier.module.get_submodule(target_layer_name(classifier))
    cam = LayerGradCam(classifier.module, layer)
    size = classifier.meta.image_size
    maps = []
    for start in range(0, len(images), batch_size):
        batch = classifier.to_input(images[start : start + batch_size]).requires_grad_(True)
        wanted = torch.as_tensor(list(targets[start : start + batch_size]), dtype=torch.long)
        with torch.enable_grad():
            attribution = cam.attribute(batch, target=wanted, relu_attributions=positive_only)
        upsampled = LayerAttribution.interpolate(attribution, (size, size), "bilinear")
        maps.append(upsampled.detach().sum(dim=1).cpu().numpy())
    if not maps:
        return np.zeros((0, size, size), np.float32)
    return np.stack([_unit(m) for m in np.concatenate(maps)]).astype(np.float32)


def _unit(heat: np.ndarray) -> np.ndarray:
    heat = np.nan_to_num(heat - heat.min())
    top = heat.max()
    return heat / top if top > 0 else heat


def overlay(image: np.ndarray, heat: np.ndarray, side: int = PANEL) -> Image.Image:
    """The image with its heat map laid over it (jet colours, 45 % opaque), side x side."""
    import matplotlib

    colours = matplotlib.colormaps["jet"](heat)[..., :3]
    blended = 0.55 * image.astype(np.float32) / 255.0 + 0.45 * colours
    picture = Image.fromarray(np.uint8(np.clip(blended, 0, 1) * 255))
    return picture.resize((side, side), Image.Resampling.BILINEAR)


def worst_errors(labels: np.ndarray, probs: np.ndarray, per_class: int) -> dict[int, list[int]]:
    """For each true class, its `per_class` most confident wrong answers (indices)."""
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    chosen: dict[int, list[int]] = {}
    for label in np.unique(labels):
        wrong = np.flatnonzero((labels == label) & (predicted != label))
        order = wrong[np.argsort(-confidence[wrong], kind="stable")]
        if len(order):
            chosen[int(label)] = order[:per_class].tolist()
    return chosen


def error_grid(
    classifier: Classifier,
    images: np.ndarray,
    labels: np.ndarray,
    probs: np.ndarray,
    per_class: int,
    path: Path,
) -> int:
    """Write the worst errors of each class as one PNG grid; the number of panels drawn.

    Each panel shows the evidence for the (wrong) predicted class: what the model mistook.
    """
    chosen = worst_errors(labels, probs, per_class)
    if not chosen:
        return 0
    classes = classifier.meta.classes
    indices = [i for row in chosen.values() for i in row]
    predicted = probs.argmax(axis=1)
    heat = dict(
        zip(indices, grad_cam(classifier, images[indices], predicted[indices]), strict=True)
    )
    label_width, caption = 60, 14
    grid = Image.new(
        "RGB", (label_width + per_class * PANEL, len(chosen) * (PANEL + caption)), "white"
    )
    draw = ImageDraw.Draw(grid)
    for row, (label, members) in enumerate(chosen.items()):
        top = row * (PANEL + caption)
        draw.text((4, top + PANEL // 2), f"true {classes[label]}"[:10], fill="black")
        for column, index in enumerate(members):
            left = label_width + column * PANEL
            grid.paste(overlay(images[index], heat[index]), (left, top))
            text = f"-> {classes[predicted[index]]} {probs[index].max():.2f}"
            draw.text((left + 2, top + PANEL), text[:20], fill="black")
    _save_png(grid, path)
    return len(indices)


def explain_files(
    classifier: Classifier, paths: Sequence[Path], out_dir: Path, target: str | None = None
) -> list[dict]:
    """One `<name>.gradcam.png` per image in out_dir: the evidence for the predicted class
    (or `target`); what was written, and for which class."""
    from visionloop.images import load_for_model

    meta = classifier.meta
    if target is not None and target not in meta.classes:
        from visionloop.errors import VisionloopError

        raise VisionloopError(
            f"--target {target!r} is not a class of the model; it knows {', '.join(meta.classes)}"
        )
    images = np.stack([load_for_model(p, meta.image_size, meta.resize) for p in paths])
    probs = classifier.predict_proba(images)
    targets = [meta.classes.index(target) if target else int(p.argmax()) for p in probs]
    heat = grad_cam(classifier, images, targets)
    written = []
    for path, image, row, wanted, cam in zip(paths, images, probs, targets, heat, strict=True):
        picture = Image.new("RGB", (2 * PANEL, PANEL + 14), "white")
        picture.paste(Image.fromarray(image).resize((PANEL, PANEL)), (0, 0))
        picture.paste(overlay(image, cam), (PANEL, 0))
        caption = f"{meta.classes[wanted]} p={row[wanted]:.2f}"
        ImageDraw.Draw(picture).text((2, PANEL), caption, fill="black")
        target_path = out_dir / f"{Path(path).stem}.gradcam.png"
        _save_png(picture, target_path)
        written.append(
            {
                "image": str(path),
                "overlay": str(target_path),
                "class": meta.classes[wanted],
                "probability": float(row[wanted]),
                "predicted": meta.classes[int(row.argmax())],
            }
        )
    return written


def _save_png(picture: Image.Image, path: Path) -> None:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    write_bytes_atomic(path, buffer.getvalue())
