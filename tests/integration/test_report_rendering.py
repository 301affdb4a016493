"""The report pages in a real browser: headless Chromium, offline, on file:// URLs.

Each page is loaded once with `--dump-dom` (the document as the browser built it) and
`--screenshot`; host names resolve to nothing, so a page that needed the network would
show it. Chromium's console is on stderr: our pages run no script, so any console line
(a Content-Security-Policy refusal, a failed load) is a fault. Skipped where Chromium is
missing; `.ci/run` installs Debian's `chromium`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ingest_corpus import project, valid_drop
from visionloop.artifacts import evaluation, evaluation_report
from visionloop.data.ingest import ingest_drops
from visionloop.pipeline.stages import run_stage
from visionloop.promotion.evaluate import classification_metrics, draw_plots

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="Chromium is not installed (apt-get install chromium; .ci/run installs it)",
)
LABEL = "a<b>&c"  # as a folder name it is allowed here; in a page it must stay text
ESCAPED = "a&lt;b&gt;&amp;c"
VIRIDIS_TOP = np.array([253, 231, 37])  # the largest cell of matplotlib's confusion plot


@dataclass(frozen=True)
class Rendered:
    dom: str
    pixels: np.ndarray  # (H, W, 3) uint8 screenshot
    console: list[str]

    def ink(self) -> float:
        """The share of the screenshot that is not page background."""
        return float(np.mean(self.pixels.min(axis=2) < 200))

    def pixels_near(self, colour: np.ndarray, tolerance: int = 12) -> int:
        return int(np.all(np.abs(self.pixels.astype(int) - colour) <= tolerance, axis=2).sum())


def render(page: Path, scratch: Path, height: int = 1200) -> Rendered:
    shot = scratch / f"{page.stem}.png"
    command = [
        CHROMIUM,
        *("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"),
        *("--disable-background-networking", "--disable-component-update", "--disable-sync"),
        "--host-resolver-rules=MAP * ~NOTFOUND",  # offline: no host name resolves
        f"--user-data-dir={scratch / 'profile'}",
        *("--enable-logging=stderr", "--v=0"),
        f"--window-size=1300,{height}",
        f"--screenshot={shot}",
        "--dump-dom",
        page.as_uri(),
    ]
    env = {**os.environ, "HOME": str(scratch)}  # Chromium's own files stay in tmp_path
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0 and shot.is_file(), done.stderr[-3000:]
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return Rendered(done.stdout, np.asarray(Image.open(shot).convert("RGB")), console)


def test_the_validation_pages_render_offline_with_their_content(tmp_path):
    config = project(tmp_path, validation={"min_per_class": 7}, ingest={"label_pattern": ".+"})
    valid_drop(config.data.incoming_dir / "d", labels=("cat", LABEL), per_label=6)
    ingest_drops(config)
    summary = run_stage("validate", config)  # passes, with a min_per_class warning

    page = render(Path(summary["report"]), tmp_path)
    assert page.console == []
    for text in ("sha256_unique", "max_imbalance", "min_per_class", "warning", "cat", ESCAPED):
        assert text in page.dom, text
    assert "<b>" not in page.dom  # the label stayed text: no element was made of it
    assert ">12<" in page.dom and ">2<" in page.dom  # images, classes
    assert page.ink() > 0.02

    index = render(Path(summary["history"]), tmp_path, height=600)
    assert index.console == []
    assert f'href="runs/{Path(summary["report"]).name}"' in index.dom
    assert "passed, 1 warning" in index.dom and "min_per_class" in index.dom
    assert index.ink() > 0.005


def test_the_evaluation_page_renders_offline_with_numbers_tables_and_plots(tmp_path):
    classes = ("cat", "dog", LABEL, "owl")
    rng = np.random.default_rng(1)
    labels = rng.integers(0, len(classes), 300)
    logits = rng.normal(size=(300, len(classes)))
    logits[np.arange(300), labels] += 2.5
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    result = classification_metrics(labels, probs, classes)
    out = tmp_path / "evaluate"
    evaluation.write_evaluation(out, result, classes, labels, tuple(f"{i:064x}" for i in labels))
    draw_plots(evaluation.plots_dir(out), result, classes)
    evaluation_report.write_report(out, result, classes, {"model": "simple_cnn"})

    page = render(evaluation_report.report_path(out), tmp_path, height=2600)
    assert page.console == []  # the data: images were allowed, nothing else was asked for
    metrics = result.metrics
    for key in ("top1", "f1_macro", "min_class_recall", "ece"):
        assert f"{metrics[key]:.4f}" in page.dom, key
    assert ESCAPED in page.dom and "<b>" not in page.dom and "owl" in page.dom
    assert f">{int(result.confusion[0, 0])}<" in page.dom
    assert page.dom.count("data:image/png;base64,") == 2
    assert page.ink() > 0.05
    assert page.pixels_near(VIRIDIS_TOP) > 200  # the confusion plot is drawn, not broken
