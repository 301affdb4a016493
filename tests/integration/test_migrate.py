"""`visionloop data migrate`: a store of one file per image (what ingest wrote before shards)
converted in place, nothing lost, idempotent, and finished after a SIGKILL at any step."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO_ROOT, run_cli
from tests.ingest_corpus import assert_store_consistent, project, valid_drop
from tests.legacy_store import image_bytes_by_sha, legacy_files, make_legacy
from tests.project import make_repo
from visionloop.artifacts.raw_store import LegacyLayout
from visionloop.config import Config, load_config
from visionloop.data.ingest import ingest_drops
from visionloop.data.ingest.commit import KILL_ENV
from visionloop.data.ingest.migrate import migrate
from visionloop.data.splits import run as run_split
from visionloop.errors import VisionloopError

POINTS = ["migrate_shards_half", "migrate_sealed", "migrate_manifest", "migrate_images"]
MIGRATE = (
    "import sys\n"
    "from visionloop.config import load_config\n"
    "from visionloop.data.ingest.migrate import migrate\n"
    "migrate(load_config(sys.argv[1]))\n"
)


def _store(tmp_path: Path) -> tuple[Config, dict]:
    """Three drops ingested, then turned into the old layout; what ingest wrote in the shard
    layout is the reference."""
    config = project(tmp_path, ingest={"allow_new_classes": True})
    valid_drop(config.data.incoming_dir / "a", per_label=4)
    valid_drop(config.data.incoming_dir / "b", labels=("cat", "bird"), per_label=3, seed=500)
    valid_drop(config.data.incoming_dir / "c", labels=("dog",), per_label=5, seed=900)
    ingest_drops(config)
    raw = config.data.raw_dir
    reference = {
        "manifest": (raw / "manifest.csv").read_bytes(),
        "shards": {p.name: p.read_bytes() for p in (raw / "shards").iterdir()},
    }
    make_legacy(config)
    reference["images"] = legacy_files(config)
    return config, reference


def _assert_migrated(config: Config, reference: dict) -> None:
    raw = config.data.raw_dir
    assert (raw / "manifest.csv").read_bytes() == reference["manifest"]  # the same rows
    assert {p.name: p.read_bytes() for p in (raw / "shards").iterdir()} == reference["shards"]
    assert image_bytes_by_sha(raw) == reference["images"]  # every image, byte for byte
    assert not (raw / "images").exists()
    assert sorted(p.name for p in config.data.ingest.work_dir.iterdir()) == ["ingest.lock"]
    assert_store_consistent(config)


def test_migrate_converts_in_place_with_nothing_lost_and_is_idempotent(tmp_path):
    config, reference = _store(tmp_path)
    with pytest.raises(LegacyLayout, match="visionloop data migrate"):
        ingest_drops(config)
    with pytest.raises(LegacyLayout, match="visionloop data migrate"):
        run_split(config)
    stray = config.data.raw_dir / "images" / "ff" / "not-listed.png"  # no row names it
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"kept, not deleted")

    result = migrate(config)
    assert (result.migrated, result.images, result.shards, result.unlisted) == (True, 19, 3, 1)
    aside = config.data.quarantine_dir / "migrate-unlisted" / "ff" / "not-listed.png"
    assert aside.read_bytes() == b"kept, not deleted"
    _assert_migrated(config, reference)
    again = migrate(config)
    assert (again.migrated, again.images) == (False, 19)
    _assert_migrated(config, reference)
    valid_drop(config.data.incoming_dir / "d", per_label=2, seed=2000)
    assert [d.status for d in ingest_drops(config).drops] == ["ingested"]  # ingest works again


@pytest.mark.parametrize("point", POINTS)
def test_a_killed_migration_is_finished_by_the_next_run(tmp_path, point):
    config, reference = _store(tmp_path)
    env = {**os.environ, KILL_ENV: point, "PYTHONPATH": str(REPO_ROOT / "src")}
    killed = subprocess.run(
        [sys.executable, "-c", MIGRATE, str(config.root / "params.yaml")],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with pytest.raises(VisionloopError, match="visionloop data migrate"):
        ingest_drops(config)  # ingest waits until the migration is finished
    assert migrate(config).migrated
    _assert_migrated(config, reference)


def test_a_missing_or_changed_image_stops_it_with_one_line_and_nothing_switched(tmp_path):
    config, reference = _store(tmp_path)
    params = str(config.root / "params.yaml")
    victim = sorted((config.data.raw_dir / "images").rglob("*.png"))[3]
    victim.write_bytes(victim.read_bytes() + b"junk")
    changed = run_cli("--params", params, "data", "migrate")
    assert changed.returncode == 1 and "Traceback" not in changed.stderr
    assert len(changed.stderr.strip().splitlines()) == 1 and victim.name in changed.stderr
    victim.unlink()
    missing = run_cli("--params", params, "data", "migrate")
    assert missing.returncode == 1 and "1 images in the manifest have no file" in missing.stderr
    assert "path" in (config.data.raw_dir / "manifest.csv").read_text().splitlines()[0]
    assert legacy_files(config) == {
        k: v for k, v in reference["images"].items() if k != victim.name.split(".")[0]
    }


def test_a_migrated_store_under_dvc_is_clean_and_holds_one_file_per_drop(tmp_path):
    repo = make_repo(tmp_path)  # one drop, ingested as shards
    repo.add_drop("drop-2", range(100, 110))
    config = load_config(repo.path / "params.yaml")
    make_legacy(config)
    repo.run("dvc", "add", "data/raw")  # tracked the old way: one file per image
    repo.commit("the store before shards")
    assert "nfiles: 37" in (repo.path / "data" / "raw.dvc").read_text()  # 34 images + 3

    out = repo.run("visionloop", "data", "migrate")
    assert "34 images moved into 2 shards" in out and "recorded with `dvc add`" in out
    assert repo.run("dvc", "status", "data/raw.dvc").strip() == (
        "Data and pipelines are up to date."
    )
    assert "nfiles: 5" in (repo.path / "data" / "raw.dvc").read_text()  # 2 shards + 3
