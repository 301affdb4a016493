"""The validate stage: a real Great Expectations suite over a real ingested manifest."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tests.ingest_corpus import manifest, png, project, valid_drop, write
from visionloop.artifacts.validation_report import read_runs
from visionloop.config import Config
from visionloop.data.ingest import ingest_drops
from visionloop.data.validation import ValidationFailed
from visionloop.pipeline.stages import STAGES, run_stage


def _ingested(tmp_path, **validation) -> Config:
    config = project(tmp_path, validation=validation)
    valid_drop(config.data.incoming_dir / "d", labels=("cat", "dog"), per_label=6)
    write(config.data.incoming_dir / "d" / "dog" / "extra.png", png(999))
    ingest_drops(config)
    return config


def _rewrite_manifest(config: Config, change) -> None:
    rows = manifest(config)
    change(rows)
    with (config.data.raw_dir / "manifest.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_a_clean_manifest_passes_and_writes_json_and_data_docs(tmp_path):
    config = _ingested(tmp_path)
    summary = run_stage("validate", config)
    assert summary["success"] and summary["failed_blocking"] == [] and summary["images"] == 13
    results = json.loads((config.data.validation.report_dir / "results.json").read_text())
    names = [c["name"] for c in results["checks"]]
    assert len(names) == 12 and "max_imbalance" in names and "no_label_conflicts" in names
    metrics = json.loads((config.data.validation.report_dir / "summary.json").read_text())
    assert metrics == {
        "success": True,
        "images": 13,
        "classes": 2,
        "expectations": 12,
        "failed_blocking": 0,
        "warnings": 0,
    }
    docs = config.data.validation.report_dir / "data_docs"
    assert (docs / "index.html").is_file()
    assert any("visionloop_manifest" in str(p) for p in docs.rglob("*.html"))
    # our own page of this run, and the index of every run: what the summary points to
    page = Path(summary["report"])
    assert page.parent == config.data.validation.report_dir / "runs" and page.is_file()
    assert "max_imbalance" in page.read_text() and "dog" in page.read_text()
    assert Path(summary["history"]) == config.data.validation.report_dir / "index.html"
    assert f'href="runs/{page.name}"' in Path(summary["history"]).read_text()


def test_non_blocking_failures_warn_and_blocking_ones_stop(tmp_path, caplog):
    config = _ingested(tmp_path, min_per_class=7, max_imbalance=1.1)
    summary = run_stage("validate", config)  # neither is blocking by default
    assert summary["success"] and set(summary["warnings"]) == {"min_per_class", "max_imbalance"}
    assert "min_per_class" in caplog.text

    strict = _ingested(tmp_path / "strict", min_per_class=7, blocking=["min_per_class"])
    with pytest.raises(ValidationFailed) as info:
        run_stage("validate", strict)
    message = str(info.value)
    assert "min_per_class" in message and "\n" not in message
    assert info.value.exit_code == 4
    # the message points to the failed run's page, which the history lists as failed
    runs = read_runs(strict.data.validation.report_dir)
    assert len(runs) == 1 and not runs[0]["success"]
    assert str(strict.data.validation.report_dir / runs[0]["page"]) in message


def test_a_tampered_manifest_fails_the_blocking_expectations(tmp_path):
    config = _ingested(tmp_path)

    def tamper(rows):
        rows[0]["label"] = "unicorn"
        rows[1]["sha256"] = rows[2]["sha256"]
        rows[3]["width"] = "3"
        rows[4]["mode"] = "HSV"
        rows[5]["offset"] = str(int(rows[5]["offset"]) + 512)  # not where its member is

    _rewrite_manifest(config, tamper)
    with pytest.raises(ValidationFailed) as info:
        run_stage("validate", config)
    failed = json.loads((config.data.validation.report_dir / "results.json").read_text())
    assert set(failed["failed_blocking"]) == {
        "labels_in_class_map",
        "sha256_unique",
        "width_in_bounds",
        "allowed_modes",
        "files_present",
    }
    assert "unicorn" in str(info.value)


def test_validating_before_any_ingest_says_what_to_do(tmp_path):
    with pytest.raises(ValidationFailed, match="visionloop data ingest"):
        run_stage("validate", project(tmp_path))


def test_the_stage_lists_exactly_the_params_it_reads():
    stage = STAGES["validate"]
    assert stage.params == (
        "data.raw_dir",
        "data.validation",
        "data.ingest.min_side",
        "data.ingest.max_side",
    )
    assert stage.load().__module__ == "visionloop.data.validation"
