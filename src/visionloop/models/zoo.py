"""Model architectures by name, and transfer learning from pretrained weights.

Every model is built with weights=None. Pretrained weights come from a local file the user
points at, or from torchvision's ImageNet weights in torch hub's cache (TORCH_HOME): they
are downloaded only by `visionloop weights fetch ARCH`, or by training when
`train.allow_download` is true. Nothing else ever touches the network.
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


class SmallResNet(nn.Module):
    """A compact ResNet for training from scratch on small photo sets on a CPU.

    Four stages of one torchvision BasicBlock each (32, 64, 128, 256 channels), a 3x3 stem
    with stride 2 above 48 px and stride 1 below (so 32-px images keep their detail), global
    average pooling, one linear head. ~1.2 M parameters; each block's last batch-norm scale
    starts at zero, so every block starts as the identity and deep signal flows from step 1.
    """

    def __init__(self, num_classes: int, image_size: int) -> None:
        from torchvision.models.resnet import BasicBlock

        super().__init__()
        widths = (32, 64, 128, 256)
        stride = 1 if image_size <= 48 else 2
        self.stem = nn.Sequential(
            nn.Conv2d(3, widths[0], 3, stride, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        blocks, channels = [], widths[0]
        for stage, width in enumerate(widths):
            step = 1 if stage == 0 else 2
            shortcut = None
            if step != 1 or channels != width:
                shortcut = nn.Sequential(
                    nn.Conv2d(channels, width, 1, step, bias=False), nn.BatchNorm2d(width)
                )
            blocks.append(BasicBlock(channels, width, step, shortcut))
            channels = width
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, BasicBlock):
                nn.init.zeros_(module.bn2.weight)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


def _torchvision(name: str, **extra) -> Callable[[int, int], nn.Module]:
    def build(num_classes: int, image_size: int) -> nn.Module:
        import torchvision.models

        return getattr(torchvision.models, name)(weights=None, num_classes=num_classes, **extra)

    return build


# name -> (builder, smallest square input it accepts, the head's module name)
ZOO: dict[str, tuple[Callable[[int, int], nn.Module], int, str]] = {
    "simple_cnn": (SimpleCNN, 4, "classifier.5"),
    "small_resnet": (SmallResNet, 16, "fc"),
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
# Architectures that torchvision has ImageNet weights for (all of ZOO but our own two).
TORCHVISION_WEIGHTS = tuple(name for name in ZOO if name not in ("simple_cnn", "small_resnet"))
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# torchvision's googlenet weights expect its transform_input step, which maps ImageNet
# normalisation to (x - 0.5) / 0.5; ours is built without that step, so we feed that directly.
WEIGHTS_NORMALISATION = {"googlenet": ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))}


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
    state = _read_weights_file(path)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]  # one of our training checkpoints
    return copy_fitting_tensors(module, state, path)


def _read_weights_file(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise VisionloopError(f"{path}: pretrained weights file not found") from None
    except (RuntimeError, OSError, EOFError, ValueError) as exc:
        raise VisionloopError(f"{path}: not a readable torch weights file ({exc})") from None


def copy_fitting_tensors(module: nn.Module, state: dict, path: Path) -> list[str]:
    """Copy the tensors whose name and shape fit; the names left fresh are returned."""
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


def weights_normalisation(arch: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The mean and std torchvision's ImageNet weights were trained with."""
    return WEIGHTS_NORMALISATION.get(arch, (IMAGENET_MEAN, IMAGENET_STD))


def _torchvision_weights(arch: str):
    if arch not in TORCHVISION_WEIGHTS:
        raise VisionloopError(
            f"{arch} has no torchvision weights; pretrained: torchvision needs one of "
            f"{', '.join(TORCHVISION_WEIGHTS)}"
        )
    from torchvision.models import get_model_weights

    return get_model_weights(arch).DEFAULT


def cached_weights_path(arch: str) -> Path:
    """Where torch hub keeps the architecture's ImageNet weights ($TORCH_HOME/hub/checkpoints)."""
    url = _torchvision_weights(arch).url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


def fetch_weights(arch: str) -> Path:
    """Download the ImageNet weights into torch hub's cache (hash checked); the cached path."""
    path = cached_weights_path(arch)
    if path.is_file():
        return path
    url = _torchvision_weights(arch).url
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # the file name carries the first hex digits of its sha256, which this checks
        torch.hub.download_url_to_file(url, str(path), hash_prefix=_hash_prefix(path))
    except (OSError, RuntimeError) as exc:
        message = f"could not download {url} ({exc}); is this machine online?"
        raise VisionloopError(message) from None
    return path


def _hash_prefix(path: Path) -> str | None:
    stem = path.stem.rsplit("-", 1)
    return stem[1] if len(stem) == 2 else None


def load_torchvision_weights(module: nn.Module, arch: str, allow_download: bool) -> list[str]:
    """torchvision's ImageNet weights from torch hub's cache into `module` (its head stays
    fresh when the class count differs); with allow_download, a missing file is fetched."""
    path = cached_weights_path(arch)
    if not path.is_file():
        if not allow_download:
            raise VisionloopError(
                f"train.pretrained: torchvision: no {arch} weights in {path.parent}; run "
                f"`visionloop weights fetch {arch}` once online (or set train.allow_download: true)"
            )
        fetch_weights(arch)
    return copy_fitting_tensors(module, _read_weights_file(path), path)
