"""The evaluation of a candidate, written by the evaluate stage and read by the registry and
the reports. Files in evaluate.dir:

- metrics.json       scalar metrics, the DVC metric (`dvc metrics show/diff`)
- per_class.json     precision, recall, F1 and support for each class (a DVC plot)
- confusion.json     the confusion matrix and the most-confused (true, predicted) pairs
- predictions.csv    one row per test image: sha256, actual, predicted, confidence (the DVC
                     `confusion` plot)
- reliability.json   one row per non-empty confidence bin: confidence, accuracy, count (a
                     DVC plot)
- plots/*.png        the confusion matrix and reliability diagram
- candidate.json     the bundle's hash and the MLflow run the metrics went to, so a stale
                     evaluation is never attached to another model
- report.html        all of the above on one page that works offline
                     (visionloop.artifacts.evaluation_report)
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.atomic import write_json_atomic, write_text_atomic

METRICS_FILE = "metrics.json"
PER_CLASS_FILE = "per_class.json"
CONFUSION_FILE = "confusion.json"
PREDICTIONS_FILE = "predictions.csv"
RELIABILITY_FILE = "reliability.json"
EVALUATED_FILE = "candidate.json"
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class Evaluation:
    metrics: dict[str, float]
    per_class: list[dict[str, Any]]
    confusion: np.ndarray  # (K, K): rows are true classes, columns predicted
    most_confused: list[dict[str, Any]]
    reliability: list[dict[str, float]]
    predicted: np.ndarray  # (N,) class indices
    confidence: np.ndarray  # (N,) top-label probability


def plots_dir(out_dir: Path) -> Path:
    return out_dir / PLOTS_DIR


def write_evaluation(
    out_dir: Path,
    result: Evaluation,
    classes: tuple[str, ...],
    labels: np.ndarray,
    sha256: tuple[str, ...],
) -> None:
    write_json_atomic(out_dir / METRICS_FILE, result.metrics)
    write_json_atomic(out_dir / PER_CLASS_FILE, result.per_class)
    write_json_atomic(
        out_dir / CONFUSION_FILE,
        {
            "classes": list(classes),
            "matrix": result.confusion.tolist(),
            "most_confused": result.most_confused,
        },
    )
    # Only bins that hold images: the plot has no gaps to draw.
    filled = [row for row in result.reliability if row["count"]]
    write_json_atomic(out_dir / RELIABILITY_FILE, filled)
    write_text_atomic(out_dir / PREDICTIONS_FILE, predictions_csv(result, classes, labels, sha256))


def predictions_csv(
    result: Evaluation, classes: tuple[str, ...], labels: np.ndarray, sha256: tuple[str, ...]
) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["sha256", "actual", "predicted", "confidence"])
    for digest, true, pred, conf in zip(
        sha256, labels, result.predicted, result.confidence, strict=True
    ):
        writer.writerow([digest, classes[true], classes[pred], f"{conf:.6f}"])
    return buffer.getvalue()


def write_evaluated(out_dir: Path, bundle_sha256: str, run_id: str) -> None:
    """Written last: the files above describe this bundle and went to this MLflow run."""
    write_json_atomic(
        out_dir / EVALUATED_FILE, {"bundle_sha256": bundle_sha256, "mlflow_run_id": run_id}
    )


def read_metrics(out_dir: Path) -> dict[str, float] | None:
    path = out_dir / METRICS_FILE
    return json.loads(path.read_text()) if path.exists() else None


def evaluation_of(out_dir: Path, digest: str) -> tuple[dict[str, float], str] | None:
    """The metrics and MLflow run of the last evaluation, if it was of this bundle."""
    evaluated = out_dir / EVALUATED_FILE
    if not evaluated.exists():
        return None
    record = json.loads(evaluated.read_text())
    if record["bundle_sha256"] != digest:
        return None
    return json.loads((out_dir / METRICS_FILE).read_text()), record["mlflow_run_id"]
