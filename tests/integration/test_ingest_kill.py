"""SIGKILL during ingest, at every step of staging and commit: the drop is all in or absent,
and the next ingest completes it, leaving the same state as an uninterrupted run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT
from tests.ingest_corpus import (
    assert_store_consistent,
    manifest,
    png,
    project,
    valid_drop,
    write,
)
from visionloop.config import Config
from visionloop.data.ingest import ingest_drops
from visionloop.data.ingest.commit import KILL_ENV

POINTS = [
    "staging",
    "sealed",
    "images_half",
    "images",
    "classes",
    "manifest",
    "ledger",
    "quarantine",
    "moved",
]
INGEST = (
    "import sys\n"
    "from visionloop.config import load_config\n"
    "from visionloop.data.ingest import ingest_drops\n"
    "ingest_drops(load_config(sys.argv[1]))\n"
)


def _setup(tmp_path: Path, **data) -> Config:
    """A stored first drop, then a second drop that exercises every commit step."""
    config = project(tmp_path, ingest={"allow_new_classes": True}, **data)
    valid_drop(config.data.incoming_dir / "first", per_label=4)
    ingest_drops(config)
    second = config.data.incoming_dir / "second"
    valid_drop(second, labels=("cat", "dog", "bird"), per_label=6, seed=1000)  # a new class
    write(second / "cat" / "dup.png", png(0))  # already stored as cat: a duplicate
    write(second / "dog" / "again.png", png(100))  # first's dog/img-0: a duplicate
    write(second / "cat" / "conflict.png", png(101))  # first's dog/img-1: a label conflict
    write(second / "dog" / "empty.png", b"")
    return config


def _state(config: Config) -> dict:
    """What must be equal after an interrupted-then-completed run and an uninterrupted one."""
    rows = [
        {k: v for k, v in r.items() if k not in ("ingested_at", "drop_id")}
        for r in manifest(config)
    ]
    ledger = json.loads((config.data.raw_dir / "drops.json").read_text())
    drops = [{k: v for k, v in d.items() if k != "ingested_at"} for d in ledger["drops"]]
    quarantine = sorted(
        str(p.relative_to(config.data.quarantine_dir))
        for p in config.data.quarantine_dir.rglob("*")
        if p.is_file()
    )
    return {
        "rows": sorted(rows, key=lambda r: r["sha256"]),
        "classes": (config.data.raw_dir / "classes.json").read_text(),
        "drops": drops,
        "conflicts": ledger["label_conflicts"],
        "quarantine": quarantine,
        "incoming": sorted(p.name for p in config.data.incoming_dir.iterdir()),
        "done": sorted(p.name for p in config.data.ingest.done_dir.iterdir()),
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    config = _setup(tmp_path_factory.mktemp("reference"))
    ingest_drops(config)
    return _state(config)


def _run_killed(config: Config, point: str) -> subprocess.CompletedProcess:
    env = {**os.environ, KILL_ENV: point, "PYTHONPATH": str(REPO_ROOT / "src")}
    return subprocess.run(
        [sys.executable, "-c", INGEST, str(config.root / "params.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _assert_all_or_nothing(config: Config, before: list[dict], after_rows: int) -> None:
    """Right after the kill: the manifest is the old one or the complete new one."""
    rows = manifest(config)
    assert rows == before or len(rows) == after_rows


def _assert_completed(config: Config, reference: dict) -> None:
    assert _state(config) == reference
    assert_store_consistent(config)
    ledger = json.loads((config.data.raw_dir / "drops.json").read_text())
    assert [d["name"] for d in ledger["drops"]] == ["first", "second"]
    for entry in ledger["drops"]:
        assert entry["files"] == entry["accepted"] + entry["duplicates"] + sum(
            entry["quarantined"].values()
        )
        assert (
            entry["accepted"] == sum(r["drop_id"] == entry["drop_id"] for r in manifest(config))
            or entry["name"] == "first"
        )
    work = config.data.ingest.work_dir
    assert sorted(p.name for p in work.iterdir()) == ["ingest.lock"]


@pytest.mark.parametrize("point", POINTS)
def test_kill_at_each_step_then_rerun_completes_the_drop(tmp_path, reference, point):
    config = _setup(tmp_path)
    before = manifest(config)
    killed = _run_killed(config, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    _assert_all_or_nothing(config, before, len(reference["rows"]))

    result = ingest_drops(config)
    assert [d.status for d in result.drops] in ([], ["ingested"])
    if point != "staging":
        assert len(result.recovered) == 1  # the sealed commit was rolled forward
    _assert_completed(config, reference)


def test_external_kill_at_an_arbitrary_moment(tmp_path, reference):
    """A kill from outside, timed by the clock rather than a named point."""
    config = _setup(tmp_path)
    before = manifest(config)
    process = subprocess.Popen(
        [sys.executable, "-c", INGEST, str(config.root / "params.yaml")],
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT / "src")},
    )
    deadline = time.monotonic() + 60
    work = config.data.ingest.work_dir
    while time.monotonic() < deadline and process.poll() is None:
        if any(p.name.startswith(("stage-", "commit-")) for p in work.iterdir()):
            break
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    _assert_all_or_nothing(config, before, len(reference["rows"]))
    ingest_drops(config)
    _assert_completed(config, reference)


@pytest.mark.parametrize("point", ["moved", "renamed_done"])
def test_kill_inside_the_final_clean_up_leaves_no_folder_behind(tmp_path, reference, point):
    """Issue 15: rmtree of the commit folder killed after it deleted plan.json left a
    commit-* folder that recovery never removed."""
    config = _setup(tmp_path)
    killed = _run_killed(config, point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    work = config.data.ingest.work_dir
    if point == "moved":  # the state a kill half-way through the old rmtree left
        (commit_dir,) = work.glob("commit-*")
        (commit_dir / "plan.json").unlink()
    ingest_drops(config)
    _assert_completed(config, reference)
