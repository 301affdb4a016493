import math

import numpy as np
import pytest
import torch

from tests.digits import digits_rgb
from visionloop.artifacts.prepared import PreparedSplit, channel_stats
from visionloop.config import AugmentConfig, TrainConfig
from visionloop.models.zoo import build_model
from visionloop.training.augment import Augment
from visionloop.training.data import TrainImages, batches
from visionloop.training.loop import train_one_epoch, validate
from visionloop.training.optim import build_optimizer, build_scheduler
from visionloop.training.runtime import Runtime


@pytest.fixture(scope="module")
def tiny():
    images, labels = digits_rgb(16)
    keep = np.concatenate([np.flatnonzero(labels == c)[:4] for c in range(10)])
    return PreparedSplit(images[keep], labels[keep], tuple(str(i) for i in keep))


@pytest.mark.parametrize(
    "amp, grad_clip",
    [(None, 0.0), (torch.bfloat16, 1.0), (torch.float16, 1.0)],
    ids=["fp32", "bf16-clipped", "fp16-scaler-clipped"],
)
def test_the_loss_falls_on_a_tiny_set(tiny, amp, grad_clip):
    torch.manual_seed(0)
    runtime = Runtime(torch.device("cpu"), amp_dtype=amp)
    config = TrainConfig(
        model="simple_cnn",
        backbone_lr_scale=1.0,
        epochs=8,
        lr=0.003,
        optimizer="adamw",
        weight_decay=0.0,
    )
    model = build_model("simple_cnn", num_classes=10, image_size=16)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch=4)
    scaler = torch.amp.GradScaler("cpu", enabled=amp == torch.float16)
    stats = channel_stats(tiny.images)
    mean, std = stats["mean"], stats["std"]
    augment = Augment(
        AugmentConfig(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), hflip=False, policy="none"),
        mean,
        std,
        10,
        runtime.device,
    )
    order = np.random.default_rng(0).permutation(len(tiny))
    losses = []
    for _ in range(config.epochs):
        metrics = train_one_epoch(
            model,
            batches(tiny, order, 10),
            augment,
            optimizer,
            scheduler,
            scaler,
            runtime,
            grad_clip=grad_clip,
        )
        losses.append(metrics["train_loss"])
    assert all(math.isfinite(loss) for loss in losses)
    assert losses[-1] < 0.5 * losses[0], losses
    scores = validate(model, tiny, augment, runtime, batch_size=16, num_classes=10)
    assert scores["val_accuracy"] > 0.8


def test_channel_stats_of_a_known_image():
    images = np.zeros((2, 2, 2, 3), dtype=np.uint8)
    images[0, ..., 0] = 255  # red channel: half the pixels at 1.0, half at 0.0
    stats = channel_stats(images)
    mean, std = stats["mean"], stats["std"]
    assert mean[0] == pytest.approx(0.5) and std[0] == pytest.approx(0.5)
    assert mean[1] == 0.0 and std[1] == 1.0  # a constant channel is left unscaled


def test_train_images_give_the_memmap_batches_on_a_cpu(tiny):
    source = TrainImages(tiny, torch.device("cpu"))
    assert not source.on_device
    order = [3, 1, 2, 0]
    for (a, la), (b, lb) in zip(source.batches(order, 3), batches(tiny, order, 3), strict=True):
        assert torch.equal(a, b) and torch.equal(la, lb)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_train_images_move_the_split_to_the_gpu_once_and_gather_there(tiny):
    source = TrainImages(tiny, torch.device("cuda"))
    assert source.on_device
    order = [3, 1, 2, 0]
    for (a, la), (b, lb) in zip(source.batches(order, 3), batches(tiny, order, 3), strict=True):
        assert a.is_cuda and torch.equal(a.cpu(), b) and torch.equal(la.cpu(), lb)
