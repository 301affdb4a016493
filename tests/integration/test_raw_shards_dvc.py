"""The raw store under real DVC: one shard per drop, `dvc status` clean after each ingest, and
a new drop travels through the remote as its one shard plus the store's three small files."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

import pytest
import yaml

from tests.project import Repo, make_repo


def objects(folder: Path) -> set[str]:
    """DVC objects under a remote or a cache: files/md5/<2>/<30>[.dir], relative."""
    root = folder / "files" / "md5"
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def object_name(md5: str) -> str:
    return f"{md5[:2]}/{md5[2:]}"


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def drop_objects(repo: Repo, drop_id: str) -> dict[str, str]:
    """What DVC must send for a new drop: its shard, the store files that changed with it
    (manifest, ledger; the class map did not) and data/raw's new directory listing."""
    raw = repo.path / "data" / "raw"
    listing = yaml.safe_load((repo.path / "data" / "raw.dvc").read_text())["outs"][0]["md5"]
    return {
        object_name(md5(raw / "shards" / f"{drop_id}.tar")): "shard",
        object_name(md5(raw / "manifest.csv")): "manifest",
        object_name(md5(raw / "drops.json")): "ledger",
        object_name(listing): "listing",
    }


def latest_drop(repo: Repo) -> str:
    ledger = yaml.safe_load((repo.path / "data" / "raw" / "drops.json").read_text())
    return ledger["drops"][-1]["drop_id"]


@pytest.mark.slow  # three ingests, three pushes and pulls through real DVC: about 25 s
def test_each_drop_is_one_shard_and_push_pull_move_only_the_new_drop(tmp_path):
    repo = make_repo(tmp_path)  # drop-1: 24 images
    repo.run("dvc", "push")
    remote = tmp_path / "visionloop-dvc-remote"
    clone = Repo(tmp_path / "clone")
    repo.run("git", "clone", "-q", str(repo.path), str(clone.path))
    clone.run("dvc", "pull", "data/raw.dvc")
    cache = clone.path / ".dvc" / "cache"

    for name, seeds in (("drop-2", range(100, 110)), ("drop-3", range(200, 230))):
        shas = repo.add_drop(name, seeds)
        assert repo.run("dvc", "status", "data/raw.dvc").strip() == (
            "Data and pipelines are up to date."
        )
        drop_id = latest_drop(repo)
        expected = drop_objects(repo, drop_id)
        before = objects(remote)
        repo.run("dvc", "push")
        assert objects(remote) - before == set(expected), name  # 4, whatever the drop's size
        shard = remote / "files" / "md5" / next(k for k, v in expected.items() if v == "shard")
        with tarfile.open(shard) as tar:  # the one object that carries the drop's images
            assert sorted(m.name.split(".")[0] for m in tar) == sorted(shas)

        cached = objects(cache)
        clone.run("git", "pull", "-q")
        clone.run("dvc", "pull", "data/raw.dvc")
        assert objects(cache) - cached == set(expected), name
        for relative in ("manifest.csv", "drops.json", f"shards/{drop_id}.tar"):
            restored = clone.path / "data" / "raw" / relative
            assert restored.read_bytes() == (repo.path / "data" / "raw" / relative).read_bytes()

    raw_dvc = yaml.safe_load((repo.path / "data" / "raw.dvc").read_text())
    assert raw_dvc["outs"][0]["nfiles"] == 3 + 3  # three shards, manifest, classes, ledger
    shards = {p.stem for p in (repo.path / "data" / "raw" / "shards").iterdir()}
    ledger = yaml.safe_load((repo.path / "data" / "raw" / "drops.json").read_text())
    assert shards == {d["drop_id"] for d in ledger["drops"]}
