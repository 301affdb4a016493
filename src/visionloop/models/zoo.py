"""Model architectures by name, and transfer learning from a local file.

Weights never come from the internet: every torchvision model is built with weights=None,
and pretrained weights are only ever read from a file the user points at.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from visionloop.errors import VisionloopError


class SimpleCNN(nn.Module):
    """The seed's small CNN: two conv+pool blocks and three linear layers, any square input."""

    def __init__(self, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = image_size // 4
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, 128),
            nn.ReLU(inplace=True),
            nn.Linear(128, num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def _torchvision(name: str, **extra) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, image_size: int) -> nn.Module:
        import torchvision.models

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **extra)

    return build


# name -> (builder, smallest square input it accepts, the head's module name)
ZOO: dict[str, tuple[Callable[[int, int], nn.Module], int, str]] = {
    "simple_cnn": (SimpleCNN, 4, "classifier.5"),
    "alexnet": (_torchvision("alexnet"), 63, "classifier.6"),
    "vgg11_bn": (_torchvision("vgg11_bn"), 32, "classifier.6"),
    "resnet18": (_torchvision("resnet18"), 32, "fc"),
    "resnet34": (_torchvision("resnet34"), 32, "fc"),
    "resnet50": (_torchvision("resnet50"), 32, "fc"),
    "mobilenet_v3_small": (_torchvision("mobilenet_v3_small"), 32, "classifier.3"),
    "mobilenet_v3_large": (_torchvision("mobilenet_v3_large"), 32, "classifier.3"),
    "efficientnet_b0": (_torchvision("efficientnet_b0"), 32, "classifier.1"),
    # The auxiliary heads only matter for ImageNet-scale training and change forward's output.
    "googlenet": (
        _torchvision("googlenet", aux_logits=False, init_weights=True, transform_input=False),
        15,
        "fc",
    ),
}
ARCHITECTURES = tuple(ZOO)


def min_image_size(arch: str) -> int:
    return _spec(arch)[1]


def head_name(arch: str) -> str:
    """The module that maps features to class scores (replaced when the class count differs)."""
    return _spec(arch)[2]


def build_model(arch: str, num_classes: int, image_size: int) -> nn.Module:
    """A freshly initialised model; `arch` is a name from params (train.model)."""
    builder, smallest, _ = _spec(arch)
    if image_size < smallest:
        raise ValueError(f"{arch} needs images of at least {smallest}x{smallest}, got {image_size}")
    return builder(num_classes=num_classes, image_size=image_size)


def _spec(arch: str) -> tuple[Callable[[int, int], nn.Module], int, str]:
    if arch not in ZOO:
        raise ValueError(f"unknown model {arch!r}; choose one of {', '.join(sorted(ZOO))}")
    return ZOO[arch]


def load_pretrained(module: nn.Module, path: Path) -> list[str]:
    """Copy every tensor of a local state_dict (or one of our checkpoints) whose shape fits.

    Tensors whose shape differs (the head, when the class count differs) keep their fresh
    initialisation; their names are returned. A file whose tensors mostly do not fit is a
    different architecture and an error.
    """
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise VisionloopError(f"{path}: pretrained weights file not found") from None
    except (RuntimeError, OSError, EOFError) as exc:
        raise VisionloopError(f"{path}: not a readable torch weights file ({exc})") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # one of our training checkpoints
    state = {k.removeprefix("module.").removeprefix("_orig_mod."): v for k, v in state.items()}
    own = module.state_dict()
    fits = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if len(fits) < len(own) / 2:
        raise VisionloopError(
            f"{path}: only {len(fits)} of the model's {len(own)} tensors match; "
            "is it a state_dict of the same architecture (train.model)?"
        )
    module.load_state_dict(fits, strict=False)
    return sorted(k for k in own if k not in fits)


def freeze(module: nn.Module, arch: str, until: str) -> int:
    """Freeze parameters: "none", "all" (everything but the head) or up to a named layer.

    A layer name freezes every parameter that comes before the first parameter of that layer
    (in registration order), so "layer3" on a ResNet trains layer3, layer4 and fc.
    Returns the number of frozen parameter tensors.
    """
    if until == "none":
        return 0
    stop = head_name(arch) if until == "all" else until
    names = [name for name, _ in module.named_parameters()]
    if not any(_inside(name, stop) for name in names):
        raise VisionloopError(
            f"train.freeze: {arch} has no layer {stop!r}; use none, all, or a module name "
            f"such as {_top_level_names(module)}"
        )
    frozen = 0
    for name, parameter in module.named_parameters():
        if _inside(name, stop):
            break
        parameter.requires_grad_(False)
        frozen += 1
    return frozen


def _inside(parameter_name: str, layer: str) -> bool:
    return parameter_name == layer or parameter_name.startswith(layer + ".")


def _top_level_names(module: nn.Module) -> str:
    return ", ".join(name for name, _ in module.named_children())
