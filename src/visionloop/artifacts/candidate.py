"""The candidate, written by training and read by evaluation, the gate and the registry.

<train.dir>/model/        the bundle (visionloop.artifacts.bundle)
<train.dir>/run.json      {"run_id": <MLflow run id>, "resumed_from_epoch": N|null,
                          "bundle_sha256": <the bundle that run wrote>|null (still training)}:
                          the run evaluate and register log into, for that bundle only
<train.dir>/metrics.json  the training summary (a DVC metric)
<train.dir>/history.csv   one row per epoch (a DVC plot)
<train.dir>/recipe.json   the data facts and every data-dependent tunable: its value,
                          whether the recipe chose it (auto) or params.yaml set it, and why
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

from visionloop.artifacts.bundle import is_bundle
from visionloop.atomic import write_json_atomic, write_text_atomic
from visionloop.errors import VisionloopError

MODEL_DIR = "model"
RUN_FILE = "run.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
RECIPE_FILE = "recipe.json"


def bundle_dir(train_dir: Path) -> Path:
    return train_dir / MODEL_DIR


def require_bundle(train_dir: Path) -> Path:
    """The candidate's bundle folder, or a one-line error when training has not written one."""
    folder = bundle_dir(train_dir)
    if not is_bundle(folder):
        raise VisionloopError(f"{folder}: no trained model there; run the train stage first")
    return folder


def write_run_record(
    train_dir: Path, run_id: str, resumed_from: int | None, bundle_sha256: str | None = None
) -> None:
    """The MLflow run id for the stages after training (no tracking URI: it may hold secrets).

    Written when a training starts (bundle_sha256 None: the bundle in train.dir is still the
    previous one) and again once its bundle is saved, naming it: a training killed on the way
    never lends its run to the previous model."""
    record = {"run_id": run_id, "resumed_from_epoch": resumed_from, "bundle_sha256": bundle_sha256}
    write_json_atomic(train_dir / RUN_FILE, record)


def read_run_id(train_dir: Path, bundle_sha256: str | None = None) -> str | None:
    """The training run's MLflow id, or None when training left none; given a bundle's
    digest, only the run that wrote that bundle (records before the digest: any)."""
    path = train_dir / RUN_FILE
    if not path.exists():
        return None
    record = json.loads(path.read_text())
    if bundle_sha256 is not None and record.get("bundle_sha256", bundle_sha256) != bundle_sha256:
        return None
    return record.get("run_id")


def write_metrics(train_dir: Path, summary: dict[str, Any]) -> None:
    write_json_atomic(train_dir / METRICS_FILE, summary)


def write_recipe(train_dir: Path, recipe: dict[str, Any]) -> None:
    write_json_atomic(train_dir / RECIPE_FILE, recipe)


def read_recipe(train_dir: Path) -> dict[str, Any] | None:
    path = train_dir / RECIPE_FILE
    return json.loads(path.read_text()) if path.exists() else None


def write_history(train_dir: Path, history: list[dict[str, float]]) -> None:
    """One row per epoch, the file DVC plots."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(history[0]), lineterminator="\n")
    writer.writeheader()
    writer.writerows(history)
    write_text_atomic(train_dir / HISTORY_FILE, buffer.getvalue())
