"""Training defaults fitted to the data: the recipe chooser.

Every train key left at `auto` in params.yaml (and `prepare.image_size`) is filled in by
`choose_recipe(facts, config)`, a pure function of what the data looks like (`DataFacts`:
image sizes, grey or colour, images per class in the train split) and of the params. A
value set in params.yaml always wins. Prepare calls it for the input size, training for
everything else, with the same facts (prepare records them in stats.json), so both agree.

Two kinds of data get two recipes:
- glyphs: small grey images (digits, letters, symbols; at most GLYPH_MAX_SIDE px). They
  change meaning when mirrored or strongly rotated (b/d, 6/9), so no flips and no
  photometric policy; a small CNN at their own size, gentle crops. The demo digits are this.
- photos: everything else. Objects look the same mirrored and sit at many scales: flips,
  wide random crops, label smoothing, an EMA of the weights, a compact residual network
  trained from scratch (or resnet18 when ImageNet weights are asked for), flip test-time
  augmentation. No photometric policy by default: on a CPU budget colour and light jitter
  cost more accuracy than they bought (docs/training.md has the measurements).
Epochs follow the number of optimiser steps an epoch makes (small sets need more epochs),
and the class balance follows the train split's imbalance ratio. docs/training.md explains
each rule with the measurement behind it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from statistics import median
from typing import Any

from visionloop.config import Config, TrainConfig, deep_merge

AUTO = "auto"
# Source modes stored as grey (manifest `mode`), before visionloop.images made them RGB.
GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "I;16B", "I;16L", "F"})
GLYPH_MAX_SIDE = 64  # px: grey images at most this small are glyph-like
GREY_SHARE = 0.9  # a dataset is grey when at least this share of its images is

# Input side for photos, px: what lets a 1,000-photo set train ~90 epochs from scratch in
# about 6 minutes on 2 CPU cores (96 px costs 2x per epoch); never above the images' own
# median shorter side. On a GPU, or with ImageNet weights, set prepare.image_size higher.
PHOTO_SIDE = 64
SMALLEST_SIDE = 32  # the zoo's residual networks need at least this
SIDE_STEP = 8

# Below this many train images an epoch at batch 64 makes few optimiser steps (1,000 photos:
# 17), so batches of 32 double them: the digits reach 99.3% val accuracy in 3 epochs instead
# of 5 at the same images/s on this CPU. Larger sets keep 64 (and GPUs their throughput).
SMALL_BATCH_BELOW = 5_000
BATCH_SIZES = (32, 64)

# Optimiser steps a run aims at; epochs = steps / steps per epoch, within the bounds.
TARGET_STEPS = {"glyphs": 600, "photos": 4500}
EPOCH_BOUNDS = (30, 150)

# Below this many train images the weights of the last steps jump from batch to batch, and
# their moving average is the better model (and reaches a given accuracy epochs earlier).
EMA_BELOW = 20_000

# Imbalance (largest / smallest train class) from which classes are balanced, and from
# which the sampler replaces the weighted loss (weights beyond ~10x make the loss noisy).
BALANCE_FROM = 1.5
SAMPLER_FROM = 10.0


@dataclass(frozen=True)
class DataFacts:
    """What the recipe depends on; prepare writes these into stats.json for training."""

    classes: int
    train_per_class: tuple[int, ...]  # train images per class, in class-map order
    val_images: int
    short_side: int  # median shorter side of the train images as stored, px
    grey_share: float  # share of the train images stored in a grey mode
    prepared_side: int | None = None  # the prepared cache's side, once prepare has run

    @property
    def train_images(self) -> int:
        return sum(self.train_per_class)

    @property
    def imbalance(self) -> float:
        present = [n for n in self.train_per_class if n > 0]
        return max(present) / min(present) if present else 1.0

    @property
    def kind(self) -> str:
        if self.grey_share >= GREY_SHARE and self.short_side <= GLYPH_MAX_SIDE:
            return "glyphs"
        return "photos"

    def describe(self) -> str:
        grey = "grey" if self.grey_share >= GREY_SHARE else "colour"
        return (
            f"{self.train_images} train images in {self.classes} classes "
            f"(imbalance {self.imbalance:.1f}x), {grey}, median shorter side "
            f"{self.short_side} px: {self.kind}"
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "train_per_class": list(self.train_per_class)}

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> DataFacts:
        return cls(**{**raw, "train_per_class": tuple(raw["train_per_class"])})


def facts_from_tables(
    train_labels: Sequence[int],
    val_images: int,
    train_stored: Iterable[Mapping[str, str]],
    classes: list[str],
) -> DataFacts:
    """The facts from the split (the train images' class positions, the val count) and the
    manifest rows of the train images (each one's stored size and mode), read as a stream."""
    per_class = [0] * len(classes)
    for label in train_labels:
        per_class[int(label)] += 1
    sides, grey, stored = [], 0, 0
    for row in train_stored:
        sides.append(min(int(row["width"]), int(row["height"])))
        grey += row["mode"] in GREY_MODES
        stored += 1
    return DataFacts(
        classes=len(classes),
        train_per_class=tuple(per_class),
        val_images=val_images,
        short_side=int(median(sides)) if sides else 0,
        grey_share=grey / stored if stored else 0.0,
    )


def facts_from_cache(stats: dict[str, Any], train: Any, val: Any, num_classes: int) -> DataFacts:
    """The facts prepare recorded in stats.json, with the prepared side; for a cache without
    them, the same facts read off the cache itself (its side standing in for the source's)."""
    import numpy as np

    side = int(train.images.shape[1])
    if "facts" in stats:
        return DataFacts.from_json({**stats["facts"], "prepared_side": side})
    sample = np.asarray(train.images[:: max(1, len(train) // 500)], dtype=np.int16)
    grey = np.abs(np.diff(sample, axis=-1)).max(axis=(1, 2, 3)) <= 2
    return DataFacts(
        classes=num_classes,
        train_per_class=tuple(int(n) for n in np.bincount(train.labels, minlength=num_classes)),
        val_images=len(val),
        short_side=side,
        grey_share=float(grey.mean()) if len(grey) else 0.0,
        prepared_side=side,
    )


@dataclass(frozen=True)
class Choice:
    value: Any
    reason: str
    chosen: bool  # True: picked by the recipe; False: set in params.yaml


@dataclass(frozen=True)
class Recipe:
    """Every data-dependent tunable with its value and why; keys are params.yaml paths."""

    facts: DataFacts
    choices: dict[str, Choice] = field(default_factory=dict)

    def value(self, key: str) -> Any:
        return self.choices[key].value

    @property
    def image_size(self) -> int:
        return self.value("prepare.image_size")

    def apply(self, train: TrainConfig) -> TrainConfig:
        """The train params with every auto replaced by its chosen value."""
        nested: dict[str, Any] = {}
        for key, choice in self.choices.items():
            section, *path = key.split(".")
            if section != "train":
                continue
            node = nested
            for part in path[:-1]:
                node = node.setdefault(part, {})
            node[path[-1]] = choice.value
        return TrainConfig.model_validate(
            deep_merge(train.model_dump(), nested), context={"root": None}
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "facts": self.facts.to_json(),
            "kind": self.facts.kind,
            "choices": {
                key: {"value": _jsonable(c.value), "chosen": c.chosen, "reason": c.reason}
                for key, c in self.choices.items()
            },
        }

    def lines(self) -> list[str]:
        """What is printed before training: the data, then each value and where it came from."""
        out = [f"recipe for {self.facts.describe()}"]
        for key, choice in self.choices.items():
            origin = f"auto: {choice.reason}" if choice.chosen else "set in params.yaml"
            out.append(f"  {key} = {_jsonable(choice.value)}  ({origin})")
        return out


def choose_recipe(facts: DataFacts, config: Config) -> Recipe:
    """Fill every `auto` from the facts; values set in params.yaml are kept as they are.

    `prepare.image_size` depends on the data and prepare's params only, because the prepare
    stage runs it before training exists (and DVC lists only prepare's params for it).
    """
    train, augment = config.train, config.train.augment
    photos = facts.kind == "photos"
    choices: dict[str, Choice] = {}

    def pick(key: str, given: Any, rule: tuple[Any, str]) -> Any:
        value, reason = rule
        choices[key] = Choice(value, reason, True) if given == AUTO else Choice(given, "", False)
        return choices[key].value

    pick("prepare.image_size", config.prepare.image_size, image_size_rule(facts))
    if facts.prepared_side is not None:  # training: the cache's side is what there is
        chosen = config.prepare.image_size == AUTO
        reason = "as the prepare stage chose it from these facts" if chosen else ""
        choices["prepare.image_size"] = Choice(facts.prepared_side, reason, chosen)
    pick("train.model", train.model, model_rule(facts, train))
    batch_size = pick("train.batch_size", train.batch_size, batch_rule(facts))
    epochs = pick("train.epochs", train.epochs, epochs_rule(facts, batch_size))
    pick("train.early_stopping.patience", train.early_stopping.patience, patience_rule(epochs))
    hflip = pick(
        "train.augment.hflip",
        augment.hflip,
        (True, "photos look the same mirrored")
        if photos
        else (False, "glyphs change meaning mirrored (b/d, 2/5)"),
    )
    pick(
        "train.augment.policy",
        augment.policy,
        ("none", "crops and flips only: colour or light jitter slowed a CPU budget's training")
        if photos
        else ("none", "its large rotations and shears turn glyphs into others (6/9)"),
    )
    pick(
        "train.augment.crop_scale",
        augment.crop_scale,
        ((0.35, 1.0), "photos frame objects at many scales")
        if photos
        else ((0.8, 1.0), "glyphs fill their frame"),
    )
    pick(
        "train.augment.crop_ratio",
        augment.crop_ratio,
        ((0.75, 1.333), "photos are framed loosely")
        if photos
        else ((0.9, 1.1), "glyphs keep their proportions"),
    )
    pick(
        "train.label_smoothing",
        train.label_smoothing,
        (0.1, "photo labels are noisier and small sets overconfident")
        if photos
        else (0.0, "glyph labels are clean"),
    )
    pick("train.ema_decay", train.ema_decay, ema_rule(facts, epochs, batch_size))
    pick("train.class_balance", train.class_balance, balance_rule(facts))
    pick(
        "train.tta",
        train.tta,
        ("flip", "trained with flips: average the image and its mirror")
        if hflip
        else ("none", "trained without flips"),
    )
    pick(
        "train.backbone_lr_scale",
        train.backbone_lr_scale,
        (0.1, "fine-tuning pretrained weights: the backbone moves slowly")
        if train.pretrained is not None
        else (1.0, "trained from scratch"),
    )
    return Recipe(facts, choices)


def image_size_rule(facts: DataFacts) -> tuple[int, str]:
    side = _round_up(facts.short_side, SIDE_STEP)
    if side < SMALLEST_SIDE:
        return SMALLEST_SIDE, f"small images, upscaled to {SMALLEST_SIDE} px (the networks' floor)"
    if facts.kind == "glyphs":
        return side, "glyphs at their own size"
    if side <= PHOTO_SIDE:
        return side, "the images' median shorter side"
    return PHOTO_SIDE, f"photos: {PHOTO_SIDE} px keeps CPU epochs short; set it higher on a GPU"


def model_rule(facts: DataFacts, train: TrainConfig) -> tuple[str, str]:
    if train.pretrained == "torchvision":
        return "resnet18", "the smallest ResNet with ImageNet weights; fine-tunes well"
    if facts.kind == "glyphs":
        return "simple_cnn", "a small CNN is enough for glyphs"
    return "small_resnet", "a compact residual network that trains from scratch on a CPU"


def batch_rule(facts: DataFacts) -> tuple[int, str]:
    small, large = BATCH_SIZES
    if facts.train_images < SMALL_BATCH_BELOW:
        return small, f"a small set ({facts.train_images} train images): more steps per epoch"
    return large, f"{facts.train_images} train images"


def epochs_rule(facts: DataFacts, batch_size: int) -> tuple[int, str]:
    per_epoch = max(1, math.ceil(facts.train_images / batch_size))
    target = TARGET_STEPS[facts.kind]
    low, high = EPOCH_BOUNDS
    epochs = min(high, max(low, math.ceil(target / per_epoch)))
    return epochs, f"about {target} optimiser steps at {per_epoch} per epoch, {low}..{high}"


def patience_rule(epochs: int) -> tuple[int, str]:
    return max(10, epochs // 3), "a third of the epochs, at least 10"


def ema_rule(facts: DataFacts, epochs: int, batch_size: int) -> tuple[float, str]:
    if facts.train_images >= EMA_BELOW:
        return 0.0, f"off: {facts.train_images} train images give smooth weights anyway"
    per_epoch = max(1, math.ceil(facts.train_images / batch_size))
    # an average over about the last two epochs' steps (the warm-up shortens it early on)
    decay = round(1 - 1 / (2 * per_epoch), 4)
    return decay, f"a small set: average the weights over about 2 epochs ({2 * per_epoch} steps)"


def balance_rule(facts: DataFacts) -> tuple[str, str]:
    ratio = facts.imbalance
    if ratio < BALANCE_FROM:
        return "none", f"classes are balanced (largest/smallest {ratio:.1f}x)"
    if ratio < SAMPLER_FROM:
        return "weighted_loss", f"largest/smallest class {ratio:.1f}x"
    return "balanced_sampler", f"largest/smallest class {ratio:.1f}x: weights would be extreme"


def _round_up(value: int, step: int) -> int:
    return step * math.ceil(value / step)


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value
