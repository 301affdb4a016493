"""The checks on new drops during ingest: drift, suspected mislabels, near-duplicates with two
labels, hold and accept, and each check skipped with its reason when it cannot run."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from tests.ingest_corpus import project
from tests.integration.monitoring.helpers import (
    flip_labels,
    png_bytes,
    unseen_digits,
    watched,
    write_drop,
    write_reference,
)
from visionloop.data.ingest.summary import format_summary, problem
from visionloop.monitoring.intake import ingest_with_checks


@pytest.fixture
def config(tmp_path):
    config = project(tmp_path, ingest={"label_issues": "hold"})
    write_reference(config)
    return config


def test_a_clean_drop_passes_and_its_checks_are_reported(config, bundles):
    images, labels = unseen_digits()
    write_drop(config.data.incoming_dir / "clean", images[:150], labels[:150])
    (drop,) = ingest_with_checks(config, watched=watched(bundles)).drops

    assert drop.status == "ingested"
    checks = json.loads((config.monitoring.dir / f"clean-{drop.drop_id}.json").read_text())
    assert checks["model"] == "local"
    assert checks["drift"]["verdict"] == "none"
    assert checks["drift"]["images"] == 150
    assert checks["label_issues"]["checked"] == 150
    assert checks["label_issues"]["share"] <= config.monitoring.labels.hold_share
    assert checks["near_duplicate_conflicts"] == []
    assert checks["hold_reason"] == ""
    lines = format_summary(ingest_with_checks(config, watched=watched(bundles)))
    assert lines  # nothing pending now: still a summary


def test_an_inverted_drop_is_an_alert(config, bundles):
    images, labels = unseen_digits()
    write_drop(config.data.incoming_dir / "inverted", 255 - images[:100], labels[:100])
    (drop,) = ingest_with_checks(config, watched=watched(bundles)).drops

    drift = drop.checks["drift"]
    assert drift["verdict"] == "alert"
    assert drift["mmd_p"] < 0.01 and drift["mmd2"] > 0
    assert "drift: alert" in "\n".join(format_summary_of(drop))


def format_summary_of(drop):
    from visionloop.data.ingest.summary import check_lines

    return check_lines(drop.checks)


def test_flipped_labels_hold_the_drop_until_accepted(config, bundles):
    images, labels = unseen_digits()
    noisy, flipped = flip_labels(labels[:200], 0.1, seed=0)
    write_drop(config.data.incoming_dir / "noisy", images[:200], noisy)
    result = ingest_with_checks(config, watched=watched(bundles))
    (held,) = result.drops

    assert held.status == "held" and held.reason == "label_issues"
    assert (config.data.incoming_dir / "noisy").is_dir()  # left for a person
    assert not (config.data.raw_dir / "manifest.csv").exists()  # nothing committed
    flipped_shas = {hashlib.sha256(png_bytes(images[i])).hexdigest() for i in flipped}
    suspects = held.checks["label_issues"]["suspects"]
    found = {s["sha256"] for s in suspects}
    assert len(found & flipped_shas) / len(found) >= 0.8  # precision
    assert len(found & flipped_shas) / len(flipped_shas) >= 0.5  # recall
    assert {"given", "suggested", "score"} <= set(suspects[0])
    assert "--accept-label-issues noisy" in problem(held)

    (accepted,) = ingest_with_checks(
        config, ["noisy"], accept_label_issues=True, watched=watched(bundles)
    ).drops
    assert accepted.status == "ingested" and accepted.accepted == 200
    assert accepted.checks["label_issues"]["count"] == len(suspects)


def test_near_duplicates_with_two_labels_are_flagged(config, bundles):
    images, labels = unseen_digits()
    drop = config.data.incoming_dir / "pair"
    write_drop(drop, images[:30], labels[:30])
    other = str((labels[0] + 1) % 10)
    near = images[0].copy()
    near[0, 0] = np.minimum(near[0, 0].astype(int) + 3, 255).astype(np.uint8)  # other bytes
    (drop / other / "near.png").write_bytes(png_bytes(near))
    (outcome,) = ingest_with_checks(config, watched=watched(bundles)).drops

    assert outcome.status == "held"
    (pair,) = outcome.checks["near_duplicate_conflicts"]
    assert {pair["label"], pair["other_label"]} == {str(labels[0]), other}
    assert "near-duplicate" in outcome.detail


def test_checks_are_skipped_with_their_reason(config, bundles):
    images, labels = unseen_digits()
    # no champion: a fresh project has no registry database
    write_drop(config.data.incoming_dir / "first", images[:40], labels[:40])
    (first,) = ingest_with_checks(config).drops
    assert first.status == "ingested"
    assert first.checks["drift"]["skipped"].startswith("no champion yet")
    assert first.checks["label_issues"]["skipped"].startswith("no champion yet")

    # too small for a test, and a class the champion does not know
    small = config.data.incoming_dir / "small"
    write_drop(small, images[40:45], labels[40:45])
    for index, image in enumerate(images[45:60]):
        (small / "zebra").mkdir(parents=True, exist_ok=True)
        (small / "zebra" / f"{index}.png").write_bytes(png_bytes(image))
    (small_outcome,) = ingest_with_checks(
        config, allow_new_classes=True, watched=watched(bundles)
    ).drops
    assert small_outcome.status == "ingested" and small_outcome.accepted == 20
    assert small_outcome.checks["drift"]["images"] == 20  # drift needs no labels
    issues = small_outcome.checks["label_issues"]
    assert issues["unknown_classes"] == ["zebra"] and issues["checked"] == 5
    assert "fewer than monitoring.labels.min_images" in issues["skipped"]

    tiny = config.data.incoming_dir / "tiny"
    write_drop(tiny, images[60:70], labels[60:70])
    (tiny_outcome,) = ingest_with_checks(config, watched=watched(bundles)).drops
    assert "fewer than monitoring.drift.min_images" in tiny_outcome.checks["drift"]["skipped"]
