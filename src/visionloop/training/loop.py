"""The training loop: `train_one_epoch` and `validate`, one epoch each, return metric dicts.
Epochs, early stopping, checkpoints and resuming are engine.py's."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from visionloop.artifacts.prepared import PreparedSplit
from visionloop.progress import Progress
from visionloop.training.augment import Augment
from visionloop.training.data import batches
from visionloop.training.ema import WeightAverage
from visionloop.training.runtime import Runtime


def train_one_epoch(
    model: nn.Module,
    batch_iter: Iterable[tuple[torch.Tensor, torch.Tensor]],
    augment: Augment,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    runtime: Runtime,
    label_smoothing: float = 0.0,
    grad_clip: float = 0.0,
    progress: Progress | None = None,
    class_weights: torch.Tensor | None = None,
    ema: WeightAverage | None = None,
) -> dict[str, float]:
    """One pass over the batches; class_weights weigh the loss per class (weighted_loss)."""
    model.train()
    device = runtime.device
    totals = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, correct, count
    started = time.perf_counter()
    for images, labels in batch_iter:
        if len(labels) < 2:
            continue  # batch norm cannot train on a single image
        images = images.to(device, non_blocking=True)
        labels = labels.to(device, non_blocking=True)
        inputs, targets = augment.train_batch(images, labels)
        with torch.autocast(device.type, dtype=runtime.amp_dtype, enabled=bool(runtime.amp_dtype)):
            logits = model(inputs)
            loss = F.cross_entropy(
                logits, targets, weight=class_weights, label_smoothing=label_smoothing
            )
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
        scaler.step(optimizer)
        scaler.update()
        scheduler.step()
        if ema is not None:
            ema.update(unwrap(model))
        with torch.no_grad():
            totals += torch.stack(
                [
                    loss.detach().double() * len(labels),
                    (logits.argmax(dim=1) == labels).sum().double(),
                    torch.tensor(float(len(labels)), dtype=torch.float64, device=device),
                ]
            )
        if progress is not None:
            progress.advance(loss.detach())
    elapsed = time.perf_counter() - started
    loss_sum, correct, count = runtime.sum_across_processes(totals).tolist()
    return {
        "train_loss": loss_sum / max(count, 1),
        "train_accuracy": correct / max(count, 1),
        "images_per_s": count / max(elapsed, 1e-9),
        "train_time_s": elapsed,
    }


@torch.inference_mode()
def validate(
    model: nn.Module,
    split: PreparedSplit,
    augment: Augment,
    runtime: Runtime,
    batch_size: int,
    num_classes: int,
    tta: str = "none",
) -> dict[str, float]:
    """Loss, accuracy, macro-F1 and the lowest class recall on the whole split, predicting
    as the bundle will (`tta`). Each process takes every world_size-th image and the sums
    are combined, so all processes see the same numbers and stop together."""
    model.eval()
    device = runtime.device
    indices = np.arange(runtime.rank, len(split), runtime.world_size)
    loss_sum = torch.zeros(1, dtype=torch.float64, device=device)
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.float64, device=device)
    for images, labels in batches(split, indices, batch_size):
        labels = labels.to(device)
        inputs = augment.normalise(images.to(device))
        with torch.autocast(device.type, dtype=runtime.amp_dtype, enabled=bool(runtime.amp_dtype)):
            log_probs = F.log_softmax(model(inputs).float(), dim=1)
            if tta == "flip":  # the log of the mean of both probabilities
                mirrored = F.log_softmax(model(inputs.flip(3)).float(), dim=1)
                log_probs = torch.logaddexp(log_probs, mirrored) - math.log(2)
        loss_sum += F.nll_loss(log_probs, labels, reduction="sum").double()
        confusion.index_put_(
            (labels, log_probs.argmax(dim=1)), torch.ones_like(labels, dtype=torch.float64), True
        )
    totals = runtime.sum_across_processes(torch.cat([loss_sum, confusion.flatten()]))
    return {"val_loss": float(totals[0]) / max(float(totals[1:].sum()), 1.0)} | class_scores(
        totals[1:].view(num_classes, num_classes), "val_"
    )


def class_scores(confusion: torch.Tensor, prefix: str) -> dict[str, float]:
    """Accuracy, macro-F1 over the classes present, and the lowest recall, from a confusion
    matrix (rows true, columns predicted)."""
    correct = confusion.diagonal()
    support = confusion.sum(dim=1)
    predicted = confusion.sum(dim=0)
    present = support > 0
    recall = correct[present] / support[present]
    precision = torch.where(predicted > 0, correct / predicted.clamp_min(1), 0.0)[present]
    f1 = torch.where(
        precision + recall > 0, 2 * precision * recall / (precision + recall).clamp_min(1e-12), 0.0
    )
    count = float(support.sum())
    return {
        f"{prefix}accuracy": float(correct.sum()) / max(count, 1.0),
        f"{prefix}f1_macro": float(f1.mean()) if len(f1) else 0.0,
        f"{prefix}min_recall": float(recall.min()) if len(recall) else 0.0,
    }


def unwrap(model: nn.Module) -> nn.Module:
    """The plain module under DDP and torch.compile wrappers (what the bundle stores)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def cpu_state(model: nn.Module) -> dict[str, Any]:
    return {k: v.detach().cpu().clone() for k, v in unwrap(model).state_dict().items()}
