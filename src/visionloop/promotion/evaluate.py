"""The evaluate stage: the candidate bundle on the frozen test split.

Metrics come from scikit-learn (accuracy, top-k, precision/recall/F1, confusion matrix, log
loss); calibration is the top-label reliability table and its expected calibration error
(ECE), which scikit-learn does not provide for many classes. The files it writes are
described in visionloop.artifacts.evaluation. Everything is also logged to the candidate's
MLflow run (train.dir/run.json), or to a new run when training left none.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.artifacts import candidate, evaluation, evaluation_report
from visionloop.artifacts.bundle import bundle_digest
from visionloop.artifacts.evaluation import Evaluation
from visionloop.artifacts.prepared import PreparedSplit, require_split
from visionloop.atomic import write_bytes_atomic
from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.tracking import start_run

TOP5_MIN_CLASSES = 5


def load_candidate(config: Config):
    from visionloop.models.classifier import load_bundle

    return load_bundle(candidate.require_bundle(config.train.dir))


def load_test_split(config: Config) -> PreparedSplit:
    split = require_split(config.prepare.dir, "test")
    if len(split) == 0:
        raise VisionloopError(f"{config.prepare.dir / 'test'}: the test split is empty")
    return split


def classification_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    classes: tuple[str, ...],
    calibration_bins: int = 15,
    top_confused_pairs: int = 10,
) -> Evaluation:
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        log_loss,
        precision_recall_fscore_support,
        top_k_accuracy_score,
    )

    if probs.shape != (len(labels), len(classes)):
        raise ValueError(f"probabilities {probs.shape} do not match {len(labels)} labels")
    class_ids = np.arange(len(classes))
    probs = np.asarray(probs, dtype=np.float64)
    probs = probs / probs.sum(axis=1, keepdims=True)  # float32 softmax rows drift from 1
    predicted = probs.argmax(axis=1)
    confidence = probs.max(axis=1)
    metrics: dict[str, float] = {
        "n_test": len(labels),
        "top1": accuracy_score(labels, predicted),
        "log_loss": log_loss(labels, probs, labels=class_ids),
    }
    if len(classes) >= TOP5_MIN_CLASSES:
        metrics["top5"] = top_k_accuracy_score(labels, probs, k=5, labels=class_ids)
    for average in ("macro", "weighted"):
        precision, recall, f1, _ = precision_recall_fscore_support(
            labels, predicted, labels=class_ids, average=average, zero_division=0
        )
        metrics.update(
            {f"precision_{average}": precision, f"recall_{average}": recall, f"f1_{average}": f1}
        )
    per_class = per_class_metrics(labels, predicted, classes)
    # the class the model serves worst, beside top-1: an average can hide a class left behind
    metrics["min_class_recall"] = min(row["recall"] for row in per_class if row["support"] > 0)
    reliability = reliability_table(confidence, predicted == labels, calibration_bins)
    metrics["ece"] = expected_calibration_error(reliability, len(labels))
    confusion = confusion_matrix(labels, predicted, labels=class_ids)
    return Evaluation(
        metrics={k: float(v) for k, v in metrics.items()},
        per_class=per_class,
        confusion=confusion,
        most_confused=most_confused_pairs(confusion, classes, top_confused_pairs),
        reliability=reliability,
        predicted=predicted,
        confidence=confidence,
    )


def per_class_metrics(
    labels: np.ndarray, predicted: np.ndarray, classes: tuple[str, ...]
) -> list[dict[str, Any]]:
    from sklearn.metrics import precision_recall_fscore_support

    precision, recall, f1, support = precision_recall_fscore_support(
        labels, predicted, labels=np.arange(len(classes)), average=None, zero_division=0
    )
    return [
        {
            "class": name,
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, name in enumerate(classes)
    ]


def reliability_table(confidence: np.ndarray, correct: np.ndarray, bins: int) -> list[dict]:
    """Top-label reliability: per equal-width confidence bin, mean confidence vs accuracy."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    # A confidence of exactly 1.0 belongs to the last bin, not a bin of its own.
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        rows.append(
            {
                "bin_low": float(edges[b]),
                "bin_high": float(edges[b + 1]),
                "count": count,
                "confidence": float(confidence[members].mean()) if count else None,
                "accuracy": float(correct[members].mean()) if count else None,
            }
        )
    return rows


def expected_calibration_error(reliability: list[dict], n: int) -> float:
    return float(
        sum(
            row["count"] / n * abs(row["accuracy"] - row["confidence"])
            for row in reliability
            if row["count"]
        )
    )


def most_confused_pairs(
    confusion: np.ndarray, classes: tuple[str, ...], limit: int
) -> list[dict[str, Any]]:
    off_diagonal = confusion.copy()
    np.fill_diagonal(off_diagonal, 0)
    order = np.argsort(off_diagonal, axis=None, kind="stable")[::-1]
    pairs = []
    for flat in order[:limit]:
        true, pred = np.unravel_index(flat, confusion.shape)
        if off_diagonal[true, pred] == 0:
            break
        pairs.append(
            {"true": classes[true], "predicted": classes[pred], "count": int(confusion[true, pred])}
        )
    return pairs


GRADCAM_GRID = "gradcam_errors.png"


def run(config: Config) -> dict[str, Any]:
    """The evaluate stage: metrics, tables and plots under evaluate.dir, logged to MLflow."""
    split = load_test_split(config)
    classifier = load_candidate(config)
    classes = classifier.meta.classes
    check_compatible(split, classifier.meta)
    probs = classifier.predict_proba(split.images, batch_size=config.evaluate.batch_size)
    result = classification_metrics(
        split.labels,
        probs,
        classes,
        config.evaluate.calibration_bins,
        config.evaluate.top_confused_pairs,
    )
    out_dir = config.evaluate.dir
    digest = bundle_digest(candidate.bundle_dir(config.train.dir))
    evaluation.write_evaluation(out_dir, result, classes, split.labels, split.sha256)
    draw_plots(evaluation.plots_dir(out_dir), result, classes)
    draw_error_explanations(config, classifier, split, probs)
    evaluation_report.write_report(out_dir, result, classes, model_facts(classifier.meta, digest))
    run_id = log_evaluation(config, out_dir, result, digest)  # the report page goes to MLflow too
    evaluation.write_evaluated(out_dir, digest, run_id)
    return {"metrics": result.metrics, "mlflow_run_id": run_id, "dir": str(config.evaluate.dir)}


def model_facts(meta, digest: str) -> dict[str, str]:
    """What the report says about the model it evaluated."""
    return {
        "model": meta.arch,
        "input": f"{meta.image_size} px ({meta.resize})",
        "test-time augmentation": meta.tta,
        "bundle": digest[:12],
    }


def draw_error_explanations(config: Config, classifier, split, probs: np.ndarray) -> None:
    """Grad-CAM of each class's most confident errors: plots/gradcam_errors.png."""
    from visionloop.monitoring.explain import error_grid

    per_class = config.monitoring.explain_per_class
    target = evaluation.plots_dir(config.evaluate.dir) / GRADCAM_GRID
    target.unlink(missing_ok=True)  # a grid of an earlier candidate's errors would mislead
    if per_class:
        error_grid(classifier, np.asarray(split.images), split.labels, probs, per_class, target)


def check_compatible(split, meta) -> None:
    """The prepared test split and the model must share the class map and the image size."""
    labels = split.labels
    if labels.min() < 0 or labels.max() >= len(meta.classes):
        raise VisionloopError(
            f"test labels go up to {int(labels.max())} but the model knows {len(meta.classes)} "
            "classes; the model and the prepared data use different class maps, re-run prepare "
            "and train"
        )
    size = split.images.shape[1]
    if split.images.shape[1:3] != (meta.image_size, meta.image_size):
        raise VisionloopError(
            f"the prepared test images are {size} px but the model expects {meta.image_size} px; "
            "re-run train after prepare"
        )


def draw_plots(plots_dir: Path, result: Evaluation, classes: tuple[str, ...]) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only; never open a window
    import matplotlib.pyplot as plt
    from sklearn.metrics import ConfusionMatrixDisplay

    plots_dir.mkdir(parents=True, exist_ok=True)
    figure, axes = plt.subplots(figsize=(6, 6))
    ConfusionMatrixDisplay(result.confusion, display_labels=list(classes)).plot(
        ax=axes, colorbar=False
    )
    axes.set_title(f"test top-1 {result.metrics['top1']:.3f}")
    save_figure(figure, plots_dir / "confusion_matrix.png")

    figure, axes = plt.subplots(figsize=(5, 5))
    filled = [row for row in result.reliability if row["count"]]
    axes.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfect calibration")
    axes.plot(
        [row["confidence"] for row in filled],
        [row["accuracy"] for row in filled],
        marker="o",
        label="model",
    )
    axes.set(xlabel="confidence", ylabel="accuracy", xlim=(0, 1), ylim=(0, 1))
    axes.set_title(f"reliability (ECE {result.metrics['ece']:.3f})")
    axes.legend(loc="upper left")
    save_figure(figure, plots_dir / "reliability.png")


def save_figure(figure, path: Path) -> None:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    write_bytes_atomic(path, buffer.getvalue())


def log_evaluation(config: Config, out_dir: Path, result: Evaluation, digest: str) -> str:
    """Log metrics and files to the run that trained this bundle (or a new one); its id."""
    import mlflow

    with start_run(config, candidate.read_run_id(config.train.dir, digest), "evaluate") as run:
        mlflow.log_metrics({f"test_{k}": v for k, v in result.metrics.items()})
        mlflow.log_metrics(
            {
                f"test_recall_class_{metric_safe(row['class'])}": row["recall"]
                for row in result.per_class
            }
        )
        mlflow.log_artifacts(str(out_dir), artifact_path="evaluation")
        return run.info.run_id


def metric_safe(name: str) -> str:
    """MLflow metric keys allow letters, digits, '_', '-', '.', ' ' and '/' only."""
    return re.sub(r"[^\w\-. /]", "_", name)
