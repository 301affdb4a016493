"""A raw store in the layout before shards (one file per image, a `path` column), made from
a store ingest wrote, to test `visionloop data migrate` on what the old ingest left."""

from __future__ import annotations

import csv
import shutil
import tarfile
from pathlib import Path

from visionloop.artifacts.raw_store import LEGACY_COLUMNS
from visionloop.config import Config


def make_legacy(config: Config) -> list[dict[str, str]]:
    """Unpack every shard into images/<sha[:2]>/<member>, rewrite the manifest with `path`,
    remove the shards; return the legacy rows."""
    raw = config.data.raw_dir
    with (raw / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    for shard in sorted((raw / "shards").glob("*.tar")):
        with tarfile.open(shard) as tar:
            for info in tar:
                target = raw / "images" / info.name[:2] / info.name
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(tar.extractfile(info).read())
    shutil.rmtree(raw / "shards")
    legacy = []
    for row in rows:
        old = {k: v for k, v in row.items() if k not in ("member", "offset")}
        old["path"] = f"images/{row['sha256'][:2]}/{row['member']}"
        legacy.append({column: old[column] for column in LEGACY_COLUMNS})
    with (raw / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LEGACY_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(legacy)
    return legacy


def legacy_files(config: Config) -> dict[str, bytes]:
    """sha256 -> bytes of every file under images/ (the images before migration)."""
    images = config.data.raw_dir / "images"
    return {p.name.split(".")[0]: p.read_bytes() for p in images.rglob("*") if p.is_file()}


def image_bytes_by_sha(raw_dir: Path) -> dict[str, bytes]:
    """sha256 -> bytes of every image the manifest lists, read from the shards with tarfile."""
    with (raw_dir / "manifest.csv").open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    found = {}
    for row in rows:
        with tarfile.open(raw_dir / "shards" / f"{row['drop_id']}.tar") as tar:
            found[row["sha256"]] = tar.extractfile(row["member"]).read()
    return found
