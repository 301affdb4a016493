import numpy as np
import pytest
import torch

from visionloop.artifacts.bundle import BundleMeta
from visionloop.config import AugmentConfig, TrainConfig
from visionloop.models.classifier import Classifier
from visionloop.models.zoo import build_model
from visionloop.training.augment import Augment, random_resized_crop
from visionloop.training.optim import build_optimizer, build_scheduler

MEAN, STD = (0.2, 0.3, 0.4), (0.5, 0.6, 0.7)
# Values the recipe chooser would otherwise fill in (these functions take resolved params).
AUGMENT = {"crop_scale": (0.8, 1.0), "crop_ratio": (0.9, 1.1), "hflip": False, "policy": "none"}
RESOLVED = {"model": "simple_cnn", "backbone_lr_scale": 1.0}


def test_normalisation_matches_the_bundle_at_prediction_time():
    images = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    augment = Augment(
        AugmentConfig(**AUGMENT), MEAN, STD, 10, torch.device("cpu"), channels_last=True
    )
    classifier = Classifier(
        build_model("simple_cnn", 10, 8), BundleMeta("simple_cnn", (), 8, MEAN, STD)
    )
    ours = augment.normalise(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert ours.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(ours, classifier.to_input(images))


def test_full_crop_with_flip_mirrors_each_image_or_leaves_it():
    x = torch.rand(16, 3, 8, 8)
    torch.manual_seed(0)
    out = random_resized_crop(x, (1.0, 1.0), (1.0, 1.0), hflip=True)
    mirrored = [torch.allclose(o, i.flip(-1), atol=1e-5) for o, i in zip(out, x, strict=True)]
    kept = [torch.allclose(o, i, atol=1e-5) for o, i in zip(out, x, strict=True)]
    assert all(m or k for m, k in zip(mirrored, kept, strict=True))
    assert 0 < sum(mirrored) < 16  # drawn per image, not once per batch


def test_crops_differ_per_image_and_keep_the_shape():
    x = torch.rand(1, 3, 16, 16).repeat(8, 1, 1, 1)
    out = random_resized_crop(x, (0.5, 0.8), (0.75, 1.33), hflip=False)
    assert out.shape == x.shape
    assert len({round(float(o.sum()), 3) for o in out}) == 8


def test_crops_sample_where_torchvisions_affine_grid_would():
    """The separable grid is F.affine_grid's for a scale + shift + mirror, pixel for pixel."""
    import torch.nn.functional as F

    x = torch.rand(6, 3, 12, 10)
    torch.manual_seed(1)
    ours = random_resized_crop(x, (0.3, 1.0), (0.75, 1.33), hflip=True)
    torch.manual_seed(1)  # the same draws, in the same order, for the reference
    n, options = 6, {"dtype": x.dtype}
    area = torch.empty(n, **options).uniform_(0.3, 1.0)
    aspect = torch.empty(n, **options).uniform_(np.log(0.75), np.log(1.33)).exp()
    width, height = (area * aspect).sqrt().clamp(max=1), (area / aspect).sqrt().clamp(max=1)
    centre_x = (torch.rand(n) * 2 - 1) * (1 - width)
    centre_y = (torch.rand(n) * 2 - 1) * (1 - height)
    width = torch.where(torch.rand(n) < 0.5, -width, width)
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = (
        width,
        centre_x,
        height,
        centre_y,
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    reference = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    assert torch.allclose(ours, reference, atol=1e-5)


def test_train_batches_are_normalised_as_prediction_normalises():
    config = AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False, policy="none")
    augment = Augment(config, MEAN, STD, 10, torch.device("cpu"), channels_last=True)
    images = torch.randint(0, 256, (5, 3, 9, 9), dtype=torch.uint8)
    inputs, _ = augment.train_batch(images, torch.arange(5))
    assert inputs.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(inputs, augment.normalise(images), atol=1e-5)


def test_mixup_gives_soft_targets_and_policies_run_on_uint8():
    config = AugmentConfig(**{**AUGMENT, "policy": "trivialaugment"}, mixup_alpha=0.2)
    augment = Augment(config, MEAN, STD, 10, torch.device("cpu"))
    images = torch.randint(0, 256, (20, 3, 16, 16), dtype=torch.uint8)
    inputs, targets = augment.train_batch(images, torch.arange(20) % 10)
    assert inputs.shape == (20, 3, 16, 16) and inputs.dtype == torch.float32
    assert targets.shape == (20, 10) and torch.allclose(targets.sum(1), torch.ones(20))


@pytest.mark.parametrize("schedule", ["cosine", "step", "onecycle", "constant"])
def test_learning_rate_schedules(schedule):
    config = TrainConfig(
        **RESOLVED,
        schedule=schedule,
        lr=0.1,
        epochs=4,
        warmup_epochs=1,
        step_epochs=2,
        step_gamma=0.1,
    )
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=10)
    rates = []
    for _ in range(40):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    if schedule == "constant":
        assert rates == [0.1] * 40
    elif schedule == "step":
        assert rates[0] == pytest.approx(0.01) and rates[9] == pytest.approx(0.1)
        assert rates[25] == pytest.approx(0.01)
    else:
        assert rates[0] < 0.05 and max(rates) == pytest.approx(0.1, rel=0.05)
        assert rates[-1] < 0.01


def test_weight_decay_spares_biases():
    optimizer = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(**RESOLVED, weight_decay=0.1))
    decays = [(g["weight_decay"], [p.ndim for p in g["params"]]) for g in optimizer.param_groups]
    assert decays == [(0.1, [2]), (0.0, [1])]
