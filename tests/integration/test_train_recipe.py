"""Training with the recipe's options on tiny real caches: class balance, ImageNet weights from
a test-made torch hub cache (nothing downloaded), freeze then unfreeze, flip TTA in the bundle,
and the recipe recorded beside the model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from tests.digits import write_digits_cache
from tests.helpers import REPO_PARAMS, run_cli
from visionloop.artifacts.prepared import write_prepared_split
from visionloop.config import load_config
from visionloop.models.classifier import load_bundle
from visionloop.models.zoo import IMAGENET_MEAN, build_model, cached_weights_path
from visionloop.training.engine import train

TINY = {"batch_size": 16, "log_model": False, "progress": "off", "seed": 0}


@pytest.fixture(autouse=True)
def own_stores(monkeypatch, tmp_path):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))  # never the user's cache
    # Tiny batches: on a busy 2-core machine two threads wait on each other at every op.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config_for(tmp_path: Path, run: str, cache: dict[str, Path], **train):
    """The repo's params on this cache; runs share one MLflow store, each its own folders."""
    return load_config(
        REPO_PARAMS,
        overrides={
            "data": {"raw_dir": str(cache["raw_dir"])},
            "prepare": {"dir": str(cache["prepared_dir"])},
            "registry": {
                "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                "artifact_dir": str(tmp_path / "artifacts"),
            },
            "train": {
                "dir": str(tmp_path / run / "candidate"),
                "checkpoint_dir": str(tmp_path / run / "checkpoints"),
                **TINY,
                **train,
            },
        },
    )


def imbalanced_cache(root: Path) -> dict[str, Path]:
    """Two overlapping classes, 10:1 in train, balanced in val: brightness with noise."""
    rng = np.random.default_rng(0)

    def images(label: int, count: int) -> np.ndarray:
        level = 110 + 24 * label + rng.normal(0, 18, (count, 1, 1, 1))
        noise = rng.normal(0, 30, (count, 8, 8, 3))
        return np.clip(level + noise, 0, 255).astype(np.uint8)

    raw, prepared = root / "raw", root / "prepared"
    raw.mkdir(parents=True)
    (raw / "classes.json").write_text(json.dumps({"version": 1, "classes": ["common", "rare"]}))
    for split, counts in (("train", (400, 40)), ("val", (100, 100))):
        x = np.concatenate([images(0, counts[0]), images(1, counts[1])])
        y = np.repeat([0, 1], counts)
        shas = [hashlib.sha256(f"{split}{i}".encode()).hexdigest() for i in range(len(y))]
        write_prepared_split(prepared, split, x, y, shas)
    return {"raw_dir": raw, "prepared_dir": prepared}


def test_weighted_loss_and_balanced_sampler_raise_the_rare_class_recall(tmp_path):
    cache = imbalanced_cache(tmp_path / "data")
    recall = {}
    for balance in ("none", "weighted_loss", "balanced_sampler"):
        config = config_for(
            tmp_path,
            balance,
            cache,
            model="simple_cnn",
            class_balance=balance,
            epochs=6,
            early_stopping={"patience": 6},
            augment={"crop_scale": [1.0, 1.0], "crop_ratio": [1.0, 1.0], "hflip": False},
        )
        summary = train(config)
        assert summary["recipe"]["train.class_balance"] == balance
        recall[balance] = summary["val_min_recall"]  # the rare class: the majority wins ties
    assert recall["weighted_loss"] > recall["none"] + 0.15, recall
    assert recall["balanced_sampler"] > recall["none"] + 0.15, recall


def write_imagenet_file(arch: str) -> dict[str, torch.Tensor]:
    """A randomly initialised 1000-class state_dict under the name torchvision's hub expects."""
    torch.manual_seed(1)
    state = build_model(arch, num_classes=1000, image_size=224).state_dict()
    path = cached_weights_path(arch)
    path.parent.mkdir(parents=True)
    torch.save(state, path)
    return state


def test_imagenet_weights_from_the_hub_cache_freeze_then_unfreeze_and_flip_tta(tmp_path):
    cache = write_digits_cache(tmp_path / "digits", size=32, per_class=6, fractions=(0.5, 0.5, 0))
    weights = write_imagenet_file("resnet18")
    frozen = config_for(
        tmp_path, "frozen", cache, pretrained="torchvision", freeze="all", epochs=1, tta="flip"
    )
    summary = train(frozen)
    assert summary["recipe"]["train.model"] == "resnet18"  # the recipe's pick for ImageNet weights
    bundle = load_bundle(frozen.train.dir / "model")
    assert bundle.meta.mean == IMAGENET_MEAN and bundle.meta.tta == "flip"
    trained = bundle.module.state_dict()
    for name in ("conv1.weight", "layer1.0.conv1.weight", "layer4.1.conv2.weight"):
        assert torch.equal(trained[name], weights[name]), name  # loaded, and frozen
    assert trained["fc.weight"].shape == (10, 512)  # a fresh head for 10 classes

    images = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    with torch.inference_mode():
        x = bundle.to_input(images)
        expected = (bundle.module(x).softmax(1) + bundle.module(x.flip(3)).softmax(1)) / 2
    assert np.allclose(bundle.predict_proba(images), expected.numpy(), atol=1e-6)

    thawed = config_for(
        tmp_path, "thawed", cache, pretrained="torchvision", freeze="all", unfreeze_after=1,
        epochs=2, early_stopping={"patience": 5},
    )  # fmt: skip
    train(thawed)
    epochs = {
        path.name: torch.load(path, weights_only=True)["model"]
        for path in thawed.train.checkpoint_dir.glob("epoch-*.pt")
    }
    assert torch.equal(epochs["epoch-0001.pt"]["conv1.weight"], weights["conv1.weight"])
    assert not torch.equal(epochs["epoch-0002.pt"]["conv1.weight"], weights["conv1.weight"])


def test_missing_imagenet_weights_stop_with_one_line_saying_how_to_get_them(tmp_path):
    cache = write_digits_cache(tmp_path / "digits", size=32, per_class=2, fractions=(0.5, 0.5, 0))
    params = yaml.safe_load(REPO_PARAMS.read_text())
    params["data"]["raw_dir"] = str(cache["raw_dir"])
    params["prepare"]["dir"] = str(cache["prepared_dir"])
    params["train"].update(pretrained="torchvision", dir=str(tmp_path / "candidate"))
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    result = run_cli("--params", str(path), "train")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert "no resnet18 weights in" in line and "visionloop weights fetch resnet18" in line
    assert not cached_weights_path("resnet18").exists()  # and nothing was downloaded
