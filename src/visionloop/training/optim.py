"""Optimiser and per-step learning-rate schedule from params."""

from __future__ import annotations

import math

import torch
from torch import nn

from visionloop.config import TrainConfig
from visionloop.models.zoo import head_name

FUSED_DEVICES = ("cpu", "cuda")  # where torch has fused AdamW and SGD kernels


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Four groups: backbone and head (the backbone at lr x backbone_lr_scale), each with
    and without weight decay. Frozen parameters are in them too: they get no gradient, so
    the optimiser skips them until they are unfrozen."""
    head = head_name(config.model)
    groups: dict[tuple[bool, bool], list[nn.Parameter]] = {
        (in_head, decays): [] for in_head in (False, True) for decays in (True, False)
    }
    for name, parameter in model.named_parameters():
        in_head = name == head or name.startswith(head + ".")
        # Weight decay on biases and norm scales only shrinks them; it does not regularise.
        groups[(in_head, parameter.ndim > 1)].append(parameter)
    param_groups = [
        {
            "params": params,
            "lr": config.lr * (1.0 if in_head else config.backbone_lr_scale),
            "weight_decay": config.weight_decay if decays else 0.0,
        }
        for (in_head, decays), params in groups.items()
        if params
    ]
    # One fused kernel per step instead of a loop over tensors: 3-5x faster optimiser
    # steps on this CPU (about a tenth of a small model's step time), the same arithmetic.
    fused = all(p.device.type in FUSED_DEVICES for p in model.parameters())
    if config.optimizer == "adamw":
        return torch.optim.AdamW(param_groups, lr=config.lr, fused=fused)
    return torch.optim.SGD(
        param_groups,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        fused=fused,
    )


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Stepped once per batch, so warm-up and decay are smooth within epochs."""
    total = config.epochs * steps_per_epoch
    if config.schedule == "onecycle":
        peaks = [group["lr"] for group in optimizer.param_groups]
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=peaks, total_steps=total)
    warmup = round(config.warmup_epochs * steps_per_epoch)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(step, config, warmup, total, steps_per_epoch)
    )


def lr_factor(step: int, config: TrainConfig, warmup: int, total: int, per_epoch: int) -> float:
    if config.schedule != "constant" and step < warmup:
        return (step + 1) / warmup
    if config.schedule == "cosine":
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    if config.schedule == "step":
        return config.step_gamma ** (step // (config.step_epochs * per_epoch))
    return 1.0
