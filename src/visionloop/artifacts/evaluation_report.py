"""The evaluation report: evaluate.dir/report.html, one self-contained page per evaluation.

It shows the headline numbers (top-1, macro-F1, the lowest class recall and its class,
ECE), every metric, the per-class table, the confusion matrix as a table (rows true,
columns predicted, shaded by the share of the row), the most-confused pairs, the
reliability table, and the PNG plots embedded as data: URIs. Like every report page it
works offline (visionloop.artifacts.html_page). The other files of evaluate.dir are
visionloop.artifacts.evaluation's.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.artifacts.evaluation import Evaluation
from visionloop.artifacts.html_page import (
    Html,
    figure,
    join,
    number,
    png_image,
    table,
    tag,
    write_page,
)

REPORT_FILE = "report.html"
# Above this many classes the matrix table would be wider than any screen: the page lists
# the most-confused pairs instead, and confusion.json holds the whole matrix.
MAX_MATRIX_CLASSES = 60
HEADLINE = (("top1", "top-1 accuracy"), ("f1_macro", "macro-F1"), ("ece", "ECE (calibration)"))
PLOT_TITLES = {
    "confusion_matrix.png": "Confusion matrix",
    "reliability.png": "Reliability",
    "gradcam_errors.png": "Each class's most confident errors, explained (Grad-CAM)",
}


def report_path(out_dir: Path) -> Path:
    return out_dir / REPORT_FILE


def write_report(
    out_dir: Path, result: Evaluation, classes: tuple[str, ...], about: dict[str, Any]
) -> Path:
    """The page for `result`; `about` names the model (arch, image_size, bundle, ...)."""
    plots = sorted((out_dir / "plots").glob("*.png")) if (out_dir / "plots").is_dir() else []
    body = report_body(result, classes, about, {p.name: p.read_bytes() for p in plots})
    return write_page(report_path(out_dir), "Evaluation report", body)


def report_body(
    result: Evaluation,
    classes: tuple[str, ...],
    about: dict[str, Any],
    plots: dict[str, bytes],
) -> Html:
    metrics = result.metrics
    worst = _worst_class(result.per_class)
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    described = ", ".join(f"{key} {value}" for key, value in about.items())
    return join(
        [
            tag("h1", "Evaluation on the test split"),
            tag(
                "p",
                f"{int(metrics['n_test']):,} test images, {len(classes)} classes; {described}; "
                f"evaluated {when}.",
                class_="meta",
            ),
            tag("div", _headline(metrics, worst), class_="headline"),
            tag("h2", "Per class"),
            _per_class_table(result.per_class, worst),
            tag("h2", "Confusion matrix (rows: true class, columns: predicted)"),
            _confusion_section(result.confusion, classes),
            tag("h2", "Most confused pairs"),
            _most_confused_table(result.most_confused),
            tag("h2", "Plots"),
            tag("div", join(_plot(name, data) for name, data in plots.items()), class_="plots"),
            tag("h2", "Reliability (top-label confidence bins)"),
            _reliability_table(result.reliability),
            tag("h2", "All metrics"),
            table(["metric", "value"], [[k, _metric(k, v)] for k, v in sorted(metrics.items())]),
        ]
    )


def _headline(metrics: dict[str, float], worst: dict[str, Any] | None) -> Html:
    figures = [figure(label, f"{metrics[key]:.4f}") for key, label in HEADLINE[:2]]
    if worst is not None:
        figures.append(
            figure(f"lowest class recall ({worst['class']})", f"{metrics['min_class_recall']:.4f}")
        )
    figures += [figure(label, f"{metrics[key]:.4f}") for key, label in HEADLINE[2:]]
    return join(figures)


def _metric(key: str, value: float) -> Html:
    return number(int(value) if key == "n_test" else value)  # a count, stored as a float


def _worst_class(per_class: list[dict[str, Any]]) -> dict[str, Any] | None:
    present = [row for row in per_class if row["support"] > 0]
    return min(present, key=lambda row: row["recall"]) if present else None


def _per_class_table(per_class: list[dict[str, Any]], worst: dict[str, Any] | None) -> Html:
    rows = [
        [
            join([row["class"], " (lowest recall)" if row is worst else ""]),
            number(row["precision"]),
            number(row["recall"]),
            number(row["f1"]),
            number(row["support"]),
        ]
        for row in per_class
    ]
    return table(["class", "precision", "recall", "F1", "test images"], rows)


def _confusion_section(confusion: np.ndarray, classes: tuple[str, ...]) -> Html:
    if len(classes) > MAX_MATRIX_CLASSES:
        return tag(
            "p",
            f"{len(classes)} classes: too many for a table here; the whole matrix is in "
            "confusion.json, the most-confused pairs are below.",
        )
    totals = confusion.sum(axis=1)
    rows = [
        [tag("th", true)]
        + [
            _matrix_cell(int(count), count / totals[i] if totals[i] else 0.0, i == j)
            for j, count in enumerate(confusion[i])
        ]
        for i, true in enumerate(classes)
    ]
    return table(["true \\ predicted", *classes], rows)


def _matrix_cell(count: int, share: float, diagonal: bool) -> Html:
    """A count shaded by its share of the true class: blue when right, red when wrong."""
    hue = 212 if diagonal else 0
    lightness = 100 - round(40 * share) if count else 100  # dark text stays readable
    return tag(
        "td",
        f"{count:,}",
        class_="num",
        style=f"background: hsl({hue}, 80%, {lightness}%)",
        title=f"{share:.1%} of the true class",
    )


def _most_confused_table(pairs: list[dict[str, Any]]) -> Html:
    if not pairs:
        return tag("p", "No test image was confused.")
    rows = [[p["true"], p["predicted"], number(p["count"])] for p in pairs]
    return table(["true class", "predicted as", "images"], rows)


def _reliability_table(reliability: list[dict[str, Any]]) -> Html:
    rows = [
        [
            f"{r['bin_low']:.2f} - {r['bin_high']:.2f}",
            number(r["count"]),
            number(r["confidence"]),
            number(r["accuracy"]),
        ]
        for r in reliability
        if r["count"]
    ]
    return table(["confidence bin", "images", "mean confidence", "accuracy"], rows)


def _plot(name: str, data: bytes) -> Html:
    title = PLOT_TITLES.get(name, name)
    return tag("figure", join([png_image(data, title), tag("figcaption", title)]))
