"""The project's HTML report pages: self-contained, escaped, with the validation history."""

from __future__ import annotations

import base64
import html
import io
import re
from datetime import UTC, datetime, timedelta

import numpy as np
from PIL import Image

from visionloop.artifacts import evaluation_report, validation_report
from visionloop.artifacts.html_page import document, esc, table
from visionloop.promotion.evaluate import classification_metrics

HOSTILE = '<script>alert("x")</script>'


def check(name: str, success: bool = True, blocking: bool = True, **fields) -> dict:
    return {
        "name": name,
        "table": "manifest",
        "blocking": blocking,
        "success": success,
        "unexpected_count": 0,
        "sample": [],
        "observed": None,
    } | fields


def results(success: bool = True, warnings: tuple[str, ...] = ()) -> dict:
    checks = [
        check(
            "labels_in_class_map",
            success,
            unexpected_count=0 if success else 2,
            sample=[] if success else [HOSTILE, "unicorn"],
        ),
        check("min_per_class", "min_per_class" not in warnings, blocking=False, table="classes"),
    ]
    return {
        "success": success,
        "images": 1234,
        "classes": 2,
        "expectations": len(checks),
        "failed_blocking": [] if success else ["labels_in_class_map"],
        "warnings": list(warnings),
        "checks": checks,
    }


CLASSES = [
    {"label": HOSTILE, "count": 1000, "imbalance": 1.0},
    {"label": "dog & cat", "count": 234, "imbalance": 1000 / 234},
]


def assert_self_contained_and_escaped(page: str) -> None:
    assert not re.search(r"https?://", page, re.IGNORECASE)
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page


def test_each_run_gets_its_own_page_and_the_index_lists_them_newest_first(tmp_path):
    first = datetime(2026, 12, 1, 9, 30, tzinfo=UTC)
    passed = validation_report.write_run(tmp_path, results(), CLASSES, "aaaa1111", first)
    warned = validation_report.write_run(
        tmp_path, results(warnings=("min_per_class",)), CLASSES, "aaaa1111", first
    )  # the same second: a second name, not an overwrite
    failed = validation_report.write_run(
        tmp_path, results(success=False), CLASSES, "bbbb2222", first + timedelta(hours=1)
    )
    assert passed.name == "20261201T093000Z-aaaa1111.html"
    assert warned.name == "20261201T093000Z-aaaa1111-2.html"
    assert failed.parent == tmp_path / "runs" and len({passed, warned, failed}) == 3

    runs = validation_report.read_runs(tmp_path)
    assert [r["run"] for r in runs] == [failed.stem, warned.stem, passed.stem]
    assert [r["success"] for r in runs] == [False, True, True]

    index = (tmp_path / "index.html").read_text()
    links = re.findall(r'href="(runs/[^"]+\.html)"', index)
    assert links == [f"runs/{failed.name}", f"runs/{warned.name}", f"runs/{passed.name}"]
    assert all((tmp_path / link).is_file() for link in links)
    assert index.count(">failed<") == 1 and "passed, 1 warning<" in index
    assert "labels_in_class_map" in index and "min_per_class" in index
    assert "2026-12-01 10:30:00 UTC" in index
    assert not re.search(r"https?://", index)


def test_a_run_page_shows_every_check_and_class_escaped_and_offline(tmp_path):
    page_path = validation_report.write_run(
        tmp_path, results(success=False), CLASSES, "bbbb2222", datetime.now(UTC)
    )
    page = page_path.read_text()
    assert_self_contained_and_escaped(page)
    assert "labels_in_class_map" in page and "min_per_class" in page
    assert "unicorn" in page and "dog &amp; cat" in page
    assert ">1,234<" in page and ">4.27<" in page  # images; imbalance 1000/234
    assert 'href="../index.html"' in page  # back to the history, relative
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_an_unreadable_record_is_skipped_not_fatal(tmp_path):
    validation_report.write_run(tmp_path, results(), CLASSES, "aaaa1111", datetime.now(UTC))
    (tmp_path / "runs" / "broken.json").write_text("{not json")
    assert len(validation_report.read_runs(tmp_path)) == 1
    validation_report.write_index(tmp_path)
    assert (tmp_path / "index.html").read_text().count('href="runs/') == 1


def test_the_helpers_escape_everything_they_are_not_told_is_markup():
    assert esc(HOSTILE) == "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;"
    html = table([HOSTILE], [[HOSTILE, 'a"b']])
    assert "<script" not in html and "a&quot;b" in html
    page = document(HOSTILE, esc(HOSTILE))
    assert_self_contained_and_escaped(page)


def evaluated(tmp_path, classes: tuple[str, ...]):
    """A real evaluation (scikit-learn metrics) of made-up predictions, and a plot file."""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, len(classes), 200)
    logits = rng.normal(size=(200, len(classes)))
    logits[np.arange(200), labels] += 2.0
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = classification_metrics(labels, probs, classes)
    plot = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 30, 30)).save(plot, format="PNG")
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "reliability.png").write_bytes(plot.getvalue())
    return result, plot.getvalue()


def test_the_evaluation_page_holds_the_numbers_tables_and_plots_offline(tmp_path):
    classes = (HOSTILE, "dog", "cat")
    result, png = evaluated(tmp_path, classes)
    about = {"model": "simple_cnn", "bundle": "0123456789ab"}
    page = evaluation_report.write_report(tmp_path, result, classes, about).read_text()
    assert page == (tmp_path / "report.html").read_text()
    assert_self_contained_and_escaped(page)
    metrics = result.metrics
    for key in ("top1", "f1_macro", "min_class_recall", "ece"):
        assert f">{metrics[key]:.4f}<" in page
    worst = min(result.per_class, key=lambda row: row["recall"])
    assert f"lowest class recall ({html.escape(worst['class'])})" in page
    for row in result.per_class:
        assert f">{row['recall']:.4f}<" in page and f">{row['support']:,}<" in page
    cells = [int(c) for c in re.findall(r'<td class="num" style="[^"]*"[^>]*>(\d+)</td>', page)]
    assert cells == result.confusion.ravel().tolist()  # the matrix, row by row
    assert f'src="data:image/png;base64,{base64.b64encode(png).decode()}"' in page
    assert "simple_cnn" in page and "0123456789ab" in page


def test_too_many_classes_for_a_matrix_table_points_to_the_file(tmp_path):
    classes = tuple(f"class-{i}" for i in range(evaluation_report.MAX_MATRIX_CLASSES + 1))
    result, _ = evaluated(tmp_path, classes)
    page = evaluation_report.write_report(tmp_path, result, classes, {}).read_text()
    assert "confusion.json" in page and "true \\ predicted" not in page
