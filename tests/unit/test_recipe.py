"""The recipe chooser on digits-like and photo-like data: what it picks, and that params win."""

from __future__ import annotations

import pytest

from tests.helpers import REPO_PARAMS
from visionloop.config import load_config
from visionloop.training.recipe import DataFacts, choose_recipe, facts_from_tables

# The demo digits as the quality test splits them: 1,258 train images, 32 px grey PNGs.
DIGITS = DataFacts(
    classes=10,
    train_per_class=(125, 127, 124, 128, 127, 127, 127, 125, 122, 126),
    val_images=270,
    short_side=32,
    grey_share=1.0,
)
# trashnet-sub's leakage-safe split: 1,065 colour phone photos of 384x512, 6 classes, 3.7x.
PHOTOS = DataFacts(
    classes=6,
    train_per_class=(81, 300, 172, 182, 251, 79),
    val_images=227,
    short_side=384,
    grey_share=0.0,
)


def values(facts: DataFacts, **overrides) -> dict:
    config = load_config(REPO_PARAMS, overrides=overrides)
    return {key: choice.value for key, choice in choose_recipe(facts, config).choices.items()}


def test_digits_get_the_glyph_recipe_the_quality_test_was_tuned_on():
    chosen = values(DIGITS)
    assert chosen["prepare.image_size"] == 32 and chosen["train.model"] == "simple_cnn"
    assert chosen["train.epochs"] == 30 and chosen["train.early_stopping.patience"] == 10
    assert chosen["train.augment.hflip"] is False and chosen["train.augment.policy"] == "none"
    assert chosen["train.augment.crop_scale"] == (0.8, 1.0)
    assert chosen["train.augment.crop_ratio"] == (0.9, 1.1)
    assert chosen["train.batch_size"] == 32  # 40 steps an epoch, not 20
    assert chosen["train.label_smoothing"] == 0.0 and chosen["train.ema_decay"] == 0.9875
    assert chosen["train.class_balance"] == "none" and chosen["train.tta"] == "none"


def test_photos_get_flips_wide_crops_a_weight_average_and_a_residual_network():
    chosen = values(PHOTOS)
    assert chosen["prepare.image_size"] == 64 and chosen["train.model"] == "small_resnet"
    assert chosen["train.augment.hflip"] is True and chosen["train.tta"] == "flip"
    # colour jitter cost trashnet-sub 17 points of test top-1 at a CPU budget (training.md)
    assert chosen["train.augment.policy"] == "none"
    assert chosen["train.augment.crop_scale"][0] < 0.5  # wide crops: objects at many scales
    assert chosen["train.label_smoothing"] > 0 and 0.9 < chosen["train.ema_decay"] < 1
    assert chosen["train.class_balance"] == "weighted_loss"  # 300 vs 79: 3.8x
    # about 4,500 optimiser steps at 34 an epoch (batches of 32): more epochs than digits get
    assert chosen["train.batch_size"] == 32
    assert chosen["train.epochs"] == 133 and chosen["train.early_stopping.patience"] == 44


def test_small_photos_keep_their_own_size_and_big_sets_fewer_epochs():
    tiny = DataFacts(10, (5000,) * 10, 10000, short_side=32, grey_share=0.0)  # CIFAR-like
    chosen = values(tiny)
    assert chosen["prepare.image_size"] == 32 and chosen["train.model"] == "small_resnet"
    assert chosen["train.batch_size"] == 64  # a large set: steps are plenty
    assert chosen["train.epochs"] == 30  # the lower bound: 782 steps per epoch already
    assert values(DataFacts(2, (200, 200), 80, 1800, 0.0))["train.epochs"] == 150  # upper


@pytest.mark.parametrize(
    "per_class, balance",
    [((100, 120), "none"), ((100, 400), "weighted_loss"), ((20, 400), "balanced_sampler")],
)
def test_class_balance_follows_the_imbalance_ratio(per_class, balance):
    assert values(DataFacts(2, per_class, 50, 300, 0.0))["train.class_balance"] == balance


def test_values_set_in_params_win_and_are_marked_as_set():
    config = load_config(
        REPO_PARAMS,
        overrides={
            "prepare": {"image_size": 128},
            "train": {"model": "resnet18", "epochs": 7, "augment": {"policy": "trivialaugment"}},
        },
    )
    recipe = choose_recipe(PHOTOS, config)
    assert recipe.image_size == 128 and not recipe.choices["prepare.image_size"].chosen
    assert recipe.value("train.model") == "resnet18" and recipe.value("train.epochs") == 7
    assert recipe.value("train.augment.policy") == "trivialaugment"
    assert recipe.choices["train.augment.hflip"].chosen  # the rest is still chosen
    resolved = recipe.apply(config.train)
    assert resolved.model == "resnet18" and resolved.epochs == 7
    assert resolved.augment.hflip is True and resolved.early_stopping.patience == 10
    assert "auto" not in str(resolved.model_dump(exclude={"device", "amp", "progress"}))
    assert any("train.epochs = 7  (set in params.yaml)" in line for line in recipe.lines())


def test_pretrained_imagenet_weights_get_resnet18_and_a_slower_backbone():
    chosen = values(PHOTOS, train={"pretrained": "torchvision"})
    assert chosen["train.model"] == "resnet18" and chosen["train.backbone_lr_scale"] == 0.1
    assert values(PHOTOS)["train.backbone_lr_scale"] == 1.0


def test_training_uses_the_prepared_side_whatever_the_rule_says():
    prepared = DataFacts.from_json({**DIGITS.to_json(), "prepared_side": 16})
    recipe = choose_recipe(prepared, load_config(REPO_PARAMS))
    assert recipe.image_size == 16 and recipe.choices["prepare.image_size"].chosen


def test_facts_from_the_train_labels_and_their_manifest_rows():
    manifest = [
        {"sha256": f"{i:064x}", "label": label, "width": w, "height": h, "mode": mode}
        for i, (label, w, h, mode) in enumerate(
            [
                ("a", "640", "480", "RGB"),
                ("a", "300", "900", "RGB"),
                ("b", "32", "32", "L"),
                ("b", "500", "400", "RGB"),
            ]
        )
    ]
    # the first three are train images (classes a, a, b), the fourth a val image
    facts = facts_from_tables([0, 0, 1], 1, iter(manifest[:3]), ["a", "b", "c"])
    assert facts.train_per_class == (2, 1, 0) and facts.val_images == 1
    assert facts.short_side == 300 and facts.grey_share == pytest.approx(1 / 3)
    assert facts.kind == "photos" and facts.imbalance == 2.0
    assert DataFacts.from_json(facts.to_json()) == facts
