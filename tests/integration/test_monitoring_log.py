"""Drift on the serving prediction log: with kept images (both tests), with confidences only,
and through `visionloop monitor drift --model FOLDER` (exit 4 on an alert)."""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml
from click.testing import CliRunner

from tests.ingest_corpus import project
from tests.integration.monitoring.helpers import (
    png_bytes,
    unseen_digits,
    watched,
    write_reference,
)
from visionloop.artifacts.prediction_log import PredictionLog, now_iso
from visionloop.cli import cli
from visionloop.errors import VisionloopError
from visionloop.monitoring.log_drift import check_prediction_log
from visionloop.monitoring.select import select_to_label


def log_images(config, images, classifier, keep: bool) -> None:
    log = PredictionLog(config.serving.prediction_log, config.serving.image_store if keep else None)
    probs = classifier.predict_proba(images)
    records = []
    for image, row in zip(images, probs, strict=True):
        data = png_bytes(image)
        sha = hashlib.sha256(data).hexdigest()
        stored = log.keep_image(sha, "PNG", data)
        records.append(
            {
                "time": now_iso(),
                "sha256": sha,
                "version": "local",
                "label": str(row.argmax()),
                "confidence": float(row.max()),
                "format": "PNG",
                "stored": stored,
            }
        )
    log.append(records)


def test_drift_on_kept_images_and_on_confidences_alone(tmp_path, bundles):
    config = project(tmp_path)
    write_reference(config)
    model = watched(bundles)
    images, _ = unseen_digits()

    log_images(config, images[:80], model.classifier, keep=True)
    calm = check_prediction_log(config, model)
    assert calm["drift"].get("mode") == "images", calm
    assert calm["verdict"] == "none"
    assert calm["predictions"] == 80

    log_images(config, 255 - images[80:240], model.classifier, keep=False)
    mixed = check_prediction_log(config, model)
    assert mixed["predictions"] == 240
    assert mixed["drift"]["mode"] == "images"  # the 80 kept images only
    for day in config.serving.prediction_log.iterdir():
        day.unlink()
    log_images(config, 255 - images[:120], model.classifier, keep=False)
    shifted = check_prediction_log(config, model)
    assert shifted["drift"]["mode"] == "confidence_only"
    assert shifted["drift"]["mmd_skipped"].startswith("images not kept")
    assert shifted["verdict"] == "alert"
    saved = json.loads((config.monitoring.dir / "prediction-log.json").read_text())
    assert saved["verdict"] == "alert"


def test_select_from_the_prediction_log_takes_its_kept_images(tmp_path, bundles):
    config = project(tmp_path)
    model = watched(bundles)
    images, _ = unseen_digits()
    log_images(config, images[:30], model.classifier, keep=False)
    with pytest.raises(VisionloopError, match=r"serving\.keep_images: true"):
        select_to_label(config, model, "prediction-log", budget=5)
    log_images(config, images[30:60], model.classifier, keep=True)
    log_images(config, images[30:40], model.classifier, keep=True)  # asked again: once
    summary = select_to_label(config, model, "prediction-log", budget=5)
    assert summary["candidates"] == 30 and summary["selected"] == 5


def test_monitor_drift_cli(tmp_path, bundles):
    config = project(tmp_path)
    write_reference(config)
    images, _ = unseen_digits()
    log_images(config, 255 - images[:60], watched(bundles).classifier, keep=True)
    params = tmp_path / "params.yaml"

    # in-process (click's runner): the real command, without a second interpreter and torch
    runner = CliRunner()
    model = ["--model", str(bundles["good"])]
    result = runner.invoke(cli, ["--params", str(params), "monitor", "drift", *model])
    assert result.exit_code == 4, result.output
    assert "alert" in result.stdout and "60 images" in result.stdout

    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "params.yaml").write_text(yaml.safe_dump(yaml.safe_load(params.read_text())))
    none = runner.invoke(cli, ["--params", str(empty / "params.yaml"), "monitor", "drift"])
    assert (none.exit_code != 0 and none.exception is None) or isinstance(
        none.exception, SystemExit
    )
    assert none.stderr.strip().splitlines()[-1].startswith("Error: no champion yet")
    assert "Traceback" not in none.output
