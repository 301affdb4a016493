"""Model architectures by name. Weights never come from the internet."""

from __future__ import annotations

from torch import nn


class SimpleCNN(nn.Module):
    """The seed's small CNN: two conv+pool blocks and three linear layers, any square input."""

    def __init__(self, num_classes: int, image_size: int) -> None:
        super().__init__()
        if image_size < 4:
            raise ValueError(f"simple_cnn needs images of at least 4x4 pixels, got {image_size}")
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


def build_model(arch: str, num_classes: int, image_size: int) -> nn.Module:
    """A freshly initialised model; `arch` is a name from params (train.model)."""
    builders = {"simple_cnn": SimpleCNN}
    if arch not in builders:
        raise ValueError(f"unknown model {arch!r}; choose one of {', '.join(sorted(builders))}")
    return builders[arch](num_classes=num_classes, image_size=image_size)
