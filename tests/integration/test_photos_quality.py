"""Real photos through the user's path (bench/photos.py: data ingest + dvc repro, from
scratch) on a subset of the shared trashnet-sub set, with a reduced budget: the photo recipe
is chosen and the model clears the majority-class rate. How far above the same-split SVC
the full set gets is measured, not asserted (docs/training.md: +0.246 over the grey SVC).
Skipped where the set is absent (CI may not have it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT

DATASET = Path(os.environ.get("VISIONLOOP_PHOTO_SET", "/work/shared/datasets/trashnet-sub"))
PER_CLASS = 60  # 360 photos of 6 classes: 252 train, 54 val, 54 test
EPOCHS = 24  # instead of the recipe's ~150 for so few images: about a minute of training


@pytest.mark.slow
@pytest.mark.skipif(
    not DATASET.is_dir(), reason=f"no photo set at {DATASET} (set VISIONLOOP_PHOTO_SET)"
)
def test_a_photo_subset_through_the_users_path_gets_the_photo_recipe_and_a_champion(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "bench" / "photos.py"),
            *("--dataset", str(DATASET), "--per-class", str(PER_CLASS)),
            *("--set", f"train.epochs={EPOCHS}", "--keep", str(tmp_path), "--json"),
        ],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)
    recipe = {key: choice["value"] for key, choice in result["recipe"]["choices"].items()}
    assert result["recipe"]["kind"] == "photos" and recipe["train.augment.hflip"] is True
    assert recipe["train.tta"] == "flip" and recipe["train.model"] == "small_resnet"
    assert recipe["train.augment.policy"] == "none" and recipe["train.batch_size"] == 32
    test, gate = result["test"], result["gate"]
    # 24 epochs on 252 photos (54 test images) leave a small, noisy margin over the SVC
    # (0.41 against 0.39 with the previous recipe), so only what must hold at any budget
    # is asserted here
    assert test["top1"] > gate["baselines"]["majority"], (test, gate)
    assert gate["mode"] == "first_model" and "same_split_baseline" in result
