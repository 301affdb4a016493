"""Real-quality run: the default params reach >= 99% test accuracy on the demo digits."""

from __future__ import annotations

import numpy as np
import pytest

from tests.digits import write_digits_cache
from tests.helpers import REPO_PARAMS
from visionloop.artifacts.prepared import open_prepared_split
from visionloop.config import load_config
from visionloop.models.classifier import load_bundle
from visionloop.training.engine import train


@pytest.mark.slow
def test_default_params_reach_99_percent_on_the_digits(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    paths = write_digits_cache(tmp_path / "digits", size=32)  # stratified 70/15/15, seed 0
    config = load_config(
        REPO_PARAMS,
        overrides={
            "data": {"raw_dir": str(paths["raw_dir"])},
            "prepare": {"dir": str(paths["prepared_dir"])},
            "registry": {
                "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                "artifact_dir": str(tmp_path / "artifacts"),
            },
            "train": {"dir": str(tmp_path / "candidate"), "checkpoint_dir": str(tmp_path / "ck")},
        },
    )
    summary = train(config)
    test = open_prepared_split(config.prepare.dir, "test")
    probs = load_bundle(config.train.dir / "model").predict_proba(np.array(test.images))
    accuracy = float((probs.argmax(axis=1) == test.labels).mean())
    assert accuracy >= 0.99, (accuracy, summary)
