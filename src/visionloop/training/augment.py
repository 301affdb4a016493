"""Augmentation and normalisation on whole batches, on the training device.

Random resized crop and flip are drawn per image but applied to the batch at once with one
affine grid: per-image transform calls cost more than the forward pass of a small model on
32-pixel images. The photometric policies (TrivialAugment, RandAugment) and mixup/cutmix
are torchvision.transforms.v2's own, applied to groups of images so that neighbours in a
batch get different operations.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from visionloop.config import AugmentConfig

POLICY_GROUP = 8  # images that share one randomly chosen policy operation


class Augment:
    def __init__(
        self,
        config: AugmentConfig,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        num_classes: int,
        device: torch.device,
        channels_last: bool = False,
    ) -> None:
        from torchvision.transforms import v2

        self.config = config
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1)
        self.scale = 1.0 / (255.0 * self.std)
        self.shift = self.mean / self.std
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.policy = {
            "none": None,
            # light, colour and contrast as photos vary in them; no geometry (the crop has it)
            "colorjitter": v2.ColorJitter(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.05),
            "trivialaugment": v2.TrivialAugmentWide(),
            "randaugment": v2.RandAugment(),
        }[config.policy]
        mixers = []
        if config.mixup_alpha > 0:
            mixers.append(v2.MixUp(alpha=config.mixup_alpha, num_classes=num_classes))
        if config.cutmix_alpha > 0:
            mixers.append(v2.CutMix(alpha=config.cutmix_alpha, num_classes=num_classes))
        self.mix = v2.RandomChoice(mixers) if mixers else None

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 N x 3 x H x W -> float, scaled exactly as bundle.Classifier does at serving."""
        x = images.float().div_(255.0)
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)

    def train_batch(
        self, images: torch.Tensor, labels: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Augmented, normalised images and targets (class indices, or soft labels when mixing)."""
        if self.policy is not None:
            images = torch.cat([self.policy(group) for group in images.split(POLICY_GROUP)])
        x = random_resized_crop(
            images.float(), self.config.crop_scale, self.config.crop_ratio, self.config.hflip
        )
        # (x / 255 - mean) / std as one multiply and one subtract, in place: on small images
        # each full pass over the batch is a visible share of a step
        x = x.mul_(self.scale).sub_(self.shift).contiguous(memory_format=self.memory_format)
        if self.mix is None:
            return x, labels
        return self.mix(x, labels)


def random_resized_crop(
    x: torch.Tensor,
    scale: tuple[float, float],
    ratio: tuple[float, float],
    hflip: bool,
) -> torch.Tensor:
    """Per image: crop a random area fraction in `scale` with aspect ratio in `ratio`, optionally
    mirror it, and resize back to the input size (bilinear), as v2.RandomResizedCrop does."""
    if scale == (1.0, 1.0) and ratio == (1.0, 1.0) and not hflip:
        return x
    n, _, height_px, width_px = x.shape
    options = {"device": x.device, "dtype": x.dtype}
    area = torch.empty(n, **options).uniform_(*scale)
    log_ratio = torch.empty(n, **options).uniform_(math.log(ratio[0]), math.log(ratio[1]))
    aspect = log_ratio.exp()
    width = (area * aspect).sqrt().clamp(max=1.0)
    height = (area / aspect).sqrt().clamp(max=1.0)
    # Crop centres in [-1, 1] grid coordinates, so the crop stays inside the image.
    centre_x = (torch.rand(n, **options) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(n, **options) * 2 - 1) * (1 - height)
    if hflip:
        width = torch.where(torch.rand(n, **options) < 0.5, -width, width)
    # Scale and shift only (no rotation): the sampling grid is separable, so it is built
    # from one row and one column per image instead of a matrix product per pixel
    # (F.affine_grid), which cost as much as the sampling itself.
    xs = _pixel_centres(width_px, **options)
    ys = _pixel_centres(height_px, **options)
    grid_x = (width[:, None] * xs + centre_x[:, None])[:, None, :].expand(n, height_px, width_px)
    grid_y = (height[:, None] * ys + centre_y[:, None])[:, :, None].expand(n, height_px, width_px)
    grid = torch.stack((grid_x, grid_y), dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _pixel_centres(size: int, **options) -> torch.Tensor:
    """Pixel centres in [-1, 1] grid coordinates (align_corners=False), as F.affine_grid."""
    return (torch.arange(size, **options) * 2 + 1) / size - 1
