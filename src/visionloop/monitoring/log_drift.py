"""Drift of what the server was asked, over a window of the prediction log.

The window is the last `monitoring.window_days` UTC days of `serving.prediction_log`, the
lines of the champion's version only (an older champion's answers are not comparable).
With `serving.keep_images: true` the images are in the image store: both tests run on the
champion's view of them. Without it only the logged confidences exist: KS runs on them
against the reference's (both with the bundle's test-time augmentation, as served), and MMD
is skipped with that reason.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.artifacts.prediction_log import image_path, read_predictions
from visionloop.artifacts.prepared import open_prepared_split
from visionloop.atomic import write_json_atomic
from visionloop.config import Config
from visionloop.images import fit_batch
from visionloop.monitoring import drift
from visionloop.monitoring.features import embed_files
from visionloop.monitoring.reference import NoModel, Watched, champion_or_reason, reference_seen
from visionloop.monitoring.tracking import log_check

REPORT = "prediction-log.json"


def check_prediction_log(config: Config, watched: Watched | None = None) -> dict[str, Any]:
    """The drift report of the log's window (written to monitoring.dir/prediction-log.json)."""
    since = datetime.now(UTC).date() - timedelta(days=config.monitoring.window_days - 1)
    report: dict[str, Any] = {"since": since.isoformat(), "log": str(config.serving.prediction_log)}
    try:
        watched = watched or champion_or_reason(config)
        report["model"] = watched.version
        records = [
            r
            for r in read_predictions(config.serving.prediction_log, since)
            if str(r.get("version")) == watched.version
        ]
        report["predictions"] = len(records)
        report["drift"] = _drift(config, watched, records)
    except NoModel as exc:
        report.setdefault("model", None)
        report["drift"] = {"skipped": str(exc)}
    report["verdict"] = report["drift"].get("verdict", "none")
    report["checked_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    report["mlflow_run_id"] = log_check(config, "prediction log", report)
    write_json_atomic(config.monitoring.dir / REPORT, report)
    return report


def _drift(config: Config, watched: Watched, records: list[dict]) -> dict[str, Any]:
    rules = config.monitoring.drift
    if len(records) < rules.min_images:
        return {
            "skipped": f"{len(records)} predictions by version {watched.version} in the "
            f"window, fewer than monitoring.drift.min_images ({rules.min_images})"
        }
    stored = [_stored_image(config, r) for r in records]
    stored = [path for path in stored if path is not None]
    if len(stored) >= rules.min_images:
        picked = drift.subsample(len(stored), rules.max_images, rules.seed + 1)
        seen, _, _ = embed_files(watched.classifier, [stored[i] for i in picked])
        result = drift.compare(reference_seen(config, watched), seen, rules)
        return {"mode": "images", **result.to_dict()}
    return {"mode": "confidence_only", **_confidence_only(config, watched, records)}


def _stored_image(config: Config, record: dict) -> Path | None:
    if not record.get("stored"):
        return None
    path = image_path(config.serving.image_store, record["sha256"], record.get("format") or "")
    return path if path.is_file() else None


def _confidence_only(config: Config, watched: Watched, records: list[dict]) -> dict[str, Any]:
    """KS on the logged confidences against the reference's, as served (with TTA)."""
    from scipy.stats import ks_2samp

    rules = config.monitoring.drift
    try:
        train = open_prepared_split(config.prepare.dir, "train")
    except FileNotFoundError:
        raise NoModel(f"no prepared train split in {config.prepare.dir} to compare with") from None
    picked = drift.subsample(len(train.labels), rules.max_reference, rules.seed)
    meta = watched.classifier.meta
    images = fit_batch(np.asarray(train.images[picked]), meta.image_size, meta.resize)
    reference = watched.classifier.predict_proba(images).max(axis=1)
    logged = np.array([float(r["confidence"]) for r in records])
    ks = ks_2samp(reference, logged)
    p_value = float(ks.pvalue)
    return {
        "verdict": drift.verdict_of(p_value, rules),
        "p_value": p_value,
        "ks_p": p_value,
        "ks_d": float(ks.statistic),
        "mmd_p": None,
        "mmd_skipped": "images not kept (serving.keep_images: false)",
        "reference_images": len(picked),
        "images": len(logged),
        "mean_confidence": float(logged.mean()),
        "reference_confidence": float(reference.mean()),
    }
