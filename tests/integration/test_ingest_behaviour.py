"""Ingest behaviour a user relies on: idempotence, odd names, conflicts, new classes, the CLI."""

from __future__ import annotations

import json
import shutil
import unicodedata

import pytest
from filelock import FileLock

from tests.helpers import run_cli
from tests.ingest_corpus import (
    assert_store_consistent,
    manifest,
    png,
    project,
    report,
    sha256,
    valid_drop,
    write,
    zip_drop,
)
from visionloop.data.ingest import ingest_drops
from visionloop.data.ingest.run import IngestBusy
from visionloop.errors import VisionloopError


def test_ingesting_the_same_drop_again_is_a_no_op(tmp_path):
    config = project(tmp_path)
    valid_drop(config.data.incoming_dir / "first")
    (outcome,) = ingest_drops(config).drops
    raw = config.data.raw_dir
    before = {p.name: p.read_bytes() for p in raw.iterdir() if p.is_file()}

    done = config.data.ingest.done_dir / "first"
    shutil.copytree(done, config.data.incoming_dir / "first-again")
    zip_drop(  # the same content, zipped inside a wrapping folder
        config.data.incoming_dir / "first.zip",
        {f"first/{p.relative_to(done)}": p.read_bytes() for p in done.rglob("*.png")},
    )
    again = ingest_drops(config).drops

    assert [d.status for d in again] == ["already_ingested", "already_ingested"]
    assert {d.drop_id for d in again} == {outcome.drop_id}
    assert {p.name: p.read_bytes() for p in raw.iterdir() if p.is_file()} == before
    assert not any(config.data.incoming_dir.glob("first*"))  # moved aside all the same
    assert len(list(config.data.ingest.done_dir.iterdir())) == 3


def test_unicode_and_odd_file_names_are_kept_nfc_and_printable(tmp_path):
    config = project(tmp_path)
    drop = config.data.incoming_dir / "odd"
    decomposed_label = unicodedata.normalize("NFD", "café")
    names = {
        unicodedata.normalize("NFD", "crème brûlée.png"): "crème brûlée.png",
        "日本語の猫.png": "日本語の猫.png",
        "emoji 🐱.png": "emoji 🐱.png",
        'comma,semi;"quote".png': 'comma,semi;"quote".png',
        "new\nline.png": "new\\x0aline.png",
        "tab\there.png": "tab\\x09here.png",
        "-leading dash.PNG": "-leading dash.PNG",
        "no extension": "no extension",
    }
    for seed, name in enumerate(names):
        write(drop / decomposed_label / name, png(seed))
    write(drop / "plain" / "x.png", png(99))
    (outcome,) = ingest_drops(config).drops

    assert outcome.accepted == len(names) + 1
    rows = manifest(config)  # read back through the csv module: quoting survived
    assert {r["source_name"] for r in rows if r["label"] == "café"} == set(names.values())
    assert {r["label"] for r in rows} == {"café", "plain"}  # NFC, whatever the disk had
    assert json.loads((config.data.raw_dir / "classes.json").read_text())["classes"] == [
        "café",
        "plain",
    ]
    assert_store_consistent(config)


def test_label_conflict_across_two_drops_quarantines_every_copy(tmp_path):
    config = project(tmp_path)
    shared = png(42)
    valid_drop(config.data.incoming_dir / "a-first", seed=0)
    write(config.data.incoming_dir / "a-first" / "cat" / "shared.png", shared)
    ingest_drops(config)
    assert sha256(shared) in {r["sha256"] for r in manifest(config)}

    valid_drop(config.data.incoming_dir / "b-second", seed=200)
    write(config.data.incoming_dir / "b-second" / "dog" / "same-bytes.png", shared)
    (second,) = ingest_drops(config).drops

    assert second.quarantined == {"label_conflict": 1}
    assert sha256(shared) not in {r["sha256"] for r in manifest(config)}  # stored copy out too
    reasons = json.loads(
        (config.data.quarantine_dir / f"b-second-{second.drop_id}" / "reasons.json").read_text()
    )
    (removed,) = reasons["removed_from_store"]
    assert removed["label"] == "cat"
    kept = config.data.quarantine_dir / f"b-second-{second.drop_id}" / removed["quarantine_path"]
    assert kept.read_bytes() == shared
    ledger = json.loads((config.data.raw_dir / "drops.json").read_text())
    assert ledger["label_conflicts"] == {sha256(shared): ["cat", "dog"]}
    assert_store_consistent(config)

    # The bytes stay banned: a third drop bringing them back under either label is refused.
    write(config.data.incoming_dir / "c-third" / "cat" / "back.png", shared)
    write(config.data.incoming_dir / "c-third" / "cat" / "fine.png", png(77))
    (third,) = ingest_drops(config).drops
    assert (third.accepted, third.quarantined) == (1, {"label_conflict": 1})


def test_same_bytes_same_label_is_kept_once_and_counted(tmp_path):
    config = project(tmp_path)
    valid_drop(config.data.incoming_dir / "one", seed=0)
    ingest_drops(config)
    write(config.data.incoming_dir / "two" / "cat" / "again.png", png(0))  # cat/img-0 of "one"
    write(config.data.incoming_dir / "two" / "cat" / "again-2.png", png(0))
    write(config.data.incoming_dir / "two" / "dog" / "new.png", png(500))
    (two,) = ingest_drops(config).drops
    assert (two.files, two.accepted, two.duplicates) == (3, 1, 2)
    assert [f["outcome"] for f in report(config, two.drop_id)["files"]] == [
        "duplicate",
        "duplicate",
        "accepted",
    ]
    assert len(manifest(config)) == 7


def test_a_drop_with_a_new_class_is_held_until_allowed(tmp_path):
    config = project(tmp_path)
    valid_drop(config.data.incoming_dir / "base", labels=("cat", "dog"))
    ingest_drops(config)
    valid_drop(config.data.incoming_dir / "birds", labels=("bird", "cat"), seed=300)
    before = (config.data.raw_dir / "manifest.csv").read_bytes()

    result = run_cli("--params", str(config.root / "params.yaml"), "data", "ingest", "-q")
    assert result.returncode == 3
    error = result.stderr.strip()
    assert error.count("\n") == 0 and "birds" in error and "['bird']" in error
    assert "--allow-new-classes" in error
    assert (config.data.incoming_dir / "birds").is_dir()  # held where it is
    assert (config.data.raw_dir / "manifest.csv").read_bytes() == before

    (outcome,) = ingest_drops(config, ["birds"], allow_new_classes=True).drops
    assert outcome.status == "ingested" and outcome.new_classes == ["bird"]
    class_map = json.loads((config.data.raw_dir / "classes.json").read_text())
    assert class_map == {"version": 2, "classes": ["cat", "dog", "bird"]}  # old indices kept


def test_cli_prints_the_accounting_summary(tmp_path):
    config = project(tmp_path)
    valid_drop(config.data.incoming_dir / "d1")
    write(config.data.incoming_dir / "d1" / "cat" / "empty.png", b"")
    write(config.data.incoming_dir / "late.zip.part", b"still uploading")
    result = run_cli("--params", str(config.root / "params.yaml"), "data", "ingest", "-q")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "files in 7 = accepted 6 + duplicates 0 + quarantined 1" in out
    assert "quarantined: zero_bytes 1" in out
    assert "skipped late.zip.part (still arriving)" in out
    assert (config.data.incoming_dir / "late.zip.part").exists()


def test_unknown_drop_and_a_held_lock_are_one_line_errors(tmp_path):
    config = project(tmp_path)
    with pytest.raises(VisionloopError, match="no drop 'nope'") as info:
        ingest_drops(config, ["nope"])
    assert "\n" not in str(info.value)
    config.data.ingest.work_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(config.data.ingest.work_dir / "ingest.lock"), pytest.raises(IngestBusy):
        ingest_drops(config)


def test_a_ready_marker_marks_the_drop_complete_and_is_not_data(tmp_path):
    """The `READY` file (visionloop.data.arrivals) is bookkeeping: not stored, not quarantined."""
    config = project(tmp_path)
    drop = config.data.incoming_dir / "marked"
    valid_drop(drop)
    images = len(list(drop.rglob("*.png")))
    (drop / "READY").write_text("")
    (outcome,) = ingest_drops(config).drops
    assert outcome.status == "ingested" and outcome.accepted == images
    assert outcome.quarantined_total == 0 and outcome.files == images


def test_an_empty_class_folder_is_reported_not_silently_ignored(tmp_path):
    """Issue 15: an empty class folder in a drop was ignored without a word."""
    config = project(tmp_path)
    drop = valid_drop(config.data.incoming_dir / "first")
    (drop / "bird").mkdir()
    zipped = zip_drop(
        config.data.incoming_dir / "second.zip",
        {"cat/a.png": png(500), "fish/": b""},
    )
    result = run_cli("--params", str(config.root / "params.yaml"), "data", "ingest", "-q")
    assert result.returncode == 0, result.stderr
    assert "empty folders, no images taken from them: bird" in result.stdout
    assert "empty folders, no images taken from them: fish" in result.stdout
    assert zipped.name and len(manifest(config)) == 7
