"""`visionloop data migrate`: a raw store of one file per image converted, in place, into one
shard per drop, with nothing lost.

The layout before shards: `images/<sha[:2]>/<sha>.<ext>` and a manifest whose `path` column
names each file. Under the ingest lock, journalled in `<work_dir>/migrate/` so that a
killed migration is finished by the next `visionloop data migrate` (ingest refuses to run
until then):

1. Every listed file must be there (checked before anything is written). For each drop, its
   images are read (each checked against its sha256 and size) and written as
   `shards/<drop_id>.tar`, whole (temporary file, then rename), in manifest order; the shard
   is then read back with the tarfile module: member count, names, sizes, offsets and every
   member's sha256 must match. A shard left by an interrupted run is checked the same way
   and kept. Readers see no change yet: no manifest row names a shard.
2. The new manifest (the same rows in the same order; `path` replaced by `member` and
   `offset`) is written to the journal: from then on the migration will be finished.
3. Roll forward, every step idempotent: manifest.csv replaced (the one switch readers
   see), files under images/ that no row lists set aside in the quarantine folder,
   images/ deleted, the journal deleted; then `dvc add` records data/raw.
"""

from __future__ import annotations

import hashlib
import shutil
import tarfile
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from visionloop.artifacts import raw_store
from visionloop.atomic import write_bytes_atomic, write_text_atomic
from visionloop.config import Config
from visionloop.data import versioning
from visionloop.data.ingest import commit
from visionloop.data.ingest.commit import failpoint
from visionloop.data.ingest.run import LOCK_FILE, IngestBusy
from visionloop.errors import VisionloopError
from visionloop.locking import exclusive

JOURNAL_MANIFEST = "manifest.csv"
UNLISTED = "migrate-unlisted"  # in the quarantine folder: files no manifest row named


class MigrationFailed(VisionloopError):
    """The old store is not whole (a file missing or changed): nothing was switched."""


@dataclass
class MigrationResult:
    migrated: bool  # False: already in the shard layout, nothing to do
    images: int  # rows in the manifest, each checked by sha256 in its shard
    shards: int
    unlisted: int  # files under images/ no row listed, set aside in the quarantine folder
    tracked: bool  # `dvc add` ran

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self, raw_dir: str) -> str:
        dvc = "; recorded with `dvc add`" if self.tracked else ""
        if not self.migrated:
            return (
                f"{raw_dir}: already one shard per drop ({self.images} images); nothing to do{dvc}"
            )
        aside = (
            f"; {self.unlisted} unlisted files set aside in {UNLISTED}/" if self.unlisted else ""
        )
        return (
            f"{raw_dir}: {self.images} images moved into {self.shards} shards, one per drop, "
            f"each checked by count and sha256{aside}{dvc}"
        )


def migrate(config: Config) -> MigrationResult:
    """Convert data.raw_dir to one shard per drop; finish an interrupted migration first."""
    track = (lambda: versioning.track_raw(config)) if config.data.dvc.track else None
    if track is not None:
        versioning.find_repo_root(config)
    raw_dir, work_dir = config.data.raw_dir, config.data.ingest.work_dir
    journal = work_dir / commit.MIGRATION
    with exclusive(work_dir / LOCK_FILE, "ingest", error=IngestBusy):
        if (journal / JOURNAL_MANIFEST).exists():
            result = _roll_forward(config, journal)
        elif raw_store.is_legacy(raw_dir):
            _refuse_pending_ingest(work_dir)
            commit.recover(config)  # only unsealed stage folders can be left: dropped
            _write_journal(raw_dir, journal)
            result = _roll_forward(config, journal)
        else:
            shutil.rmtree(journal, ignore_errors=True)  # unsealed, and nothing to do
            result = MigrationResult(False, raw_store.count_images(raw_dir), 0, 0, False)
        result.tracked = commit.track_if_pending(config, track)
    return result


def _refuse_pending_ingest(work_dir: Path) -> None:
    pending = sorted(work_dir.glob(f"{commit.COMMIT_PREFIX}*")) if work_dir.is_dir() else []
    if pending:
        raise MigrationFailed(
            f"{pending[0]}: an ingest from before the shard layout was interrupted; finish it "
            "with the visionloop version that started it (`visionloop data ingest`), then migrate"
        )


# ---------------------------------------------------------------- 1 and 2: shards, journal


def _write_journal(raw_dir: Path, journal: Path) -> None:
    rows = raw_store.read_legacy_manifest(raw_dir)
    _require_files(raw_dir, rows)
    by_drop: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        by_drop[row["drop_id"]].append(row)
    offsets: dict[str, int] = {}
    for count, (drop_id, drop_rows) in enumerate(by_drop.items(), 1):
        offsets.update(_shard_for(raw_dir, drop_id, drop_rows))
        if count == len(by_drop) // 2:
            failpoint("migrate_shards_half")
    migrated = [_migrated_row(row, offsets[row["sha256"]]) for row in rows]
    write_text_atomic(journal / JOURNAL_MANIFEST, raw_store.manifest_text(migrated))
    failpoint("migrate_sealed")


def _require_files(raw_dir: Path, rows: list[dict[str, str]]) -> None:
    missing = [row["path"] for row in rows if not (raw_dir / row["path"]).is_file()]
    if missing:
        raise MigrationFailed(
            f"{raw_dir}: {len(missing)} images in the manifest have no file (e.g. "
            f"{missing[0]}); run `dvc pull` (or `dvc checkout {raw_dir.name}`), then migrate; "
            "nothing was changed"
        )


def _shard_for(raw_dir: Path, drop_id: str, rows: list[dict[str, str]]) -> dict[str, int]:
    """sha256 -> offset of each image in the drop's shard, written (or kept) and checked."""
    target = raw_dir / raw_store.shard_relpath(drop_id)
    offsets = raw_store.member_offsets(int(row["bytes"]) for row in rows)
    if not (target.exists() and _shard_matches(target, rows, offsets)):
        raw_store.write_shard(target, _checked_images(raw_dir, rows))
        if not _shard_matches(target, rows, offsets):
            raise MigrationFailed(
                f"{target}: does not read back as written; check the disk, then migrate again"
            )
    return {row["sha256"]: offset for row, offset in zip(rows, offsets, strict=True)}


def _checked_images(raw_dir: Path, rows: list[dict[str, str]]) -> Iterator[tuple[str, bytes]]:
    for row in rows:
        data = (raw_dir / row["path"]).read_bytes()
        if hashlib.sha256(data).hexdigest() != row["sha256"] or len(data) != int(row["bytes"]):
            raise MigrationFailed(
                f"{raw_dir / row['path']}: its bytes do not match the manifest's sha256; "
                f"restore it with `dvc checkout {raw_dir.name}`, then migrate; nothing was switched"
            )
        yield Path(row["path"]).name, data


def _shard_matches(path: Path, rows: list[dict[str, str]], offsets: list[int]) -> bool:
    """Read back by an independent reader (tarfile): the members, in order, are the rows'."""
    try:
        with tarfile.open(path) as tar:
            members = tar.getmembers()
            if len(members) != len(rows):
                return False
            for info, row, offset in zip(members, rows, offsets, strict=True):
                data = tar.extractfile(info).read() if info.isreg() else b""
                if (info.name, info.size, info.offset_data) != (
                    Path(row["path"]).name,
                    int(row["bytes"]),
                    offset,
                ) or hashlib.sha256(data).hexdigest() != row["sha256"]:
                    return False
    except (tarfile.TarError, OSError):
        return False
    return True


def _migrated_row(row: dict[str, str], offset: int) -> dict[str, str]:
    moved = {k: v for k, v in row.items() if k != "path"}
    return {**moved, "member": Path(row["path"]).name, "offset": str(offset)}


# ---------------------------------------------------------------- 3: roll forward


def _roll_forward(config: Config, journal: Path) -> MigrationResult:
    raw_dir = config.data.raw_dir
    (config.data.ingest.work_dir / commit.TRACK_PENDING).touch()
    manifest = (journal / JOURNAL_MANIFEST).read_bytes()
    write_bytes_atomic(raw_dir / raw_store.MANIFEST, manifest)
    failpoint("migrate_manifest")
    rows = raw_store.read_manifest(raw_dir)
    unlisted = _set_aside_unlisted(config, {row["sha256"] for row in rows})
    shutil.rmtree(raw_dir / raw_store.LEGACY_IMAGES, ignore_errors=True)
    failpoint("migrate_images")
    shutil.rmtree(journal)
    shards = len({row["drop_id"] for row in rows})
    return MigrationResult(True, len(rows), shards, unlisted, False)


def _set_aside_unlisted(config: Config, listed: set[str]) -> int:
    """Files under images/ that no manifest row names (none in a store ingest wrote) are
    moved to the quarantine folder rather than deleted."""
    images = config.data.raw_dir / raw_store.LEGACY_IMAGES
    moved = 0
    for path in sorted(images.rglob("*")) if images.is_dir() else []:
        if path.is_file() and path.name.split(".")[0] not in listed:
            target = config.data.quarantine_dir / UNLISTED / path.relative_to(images)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(path, target)
            moved += 1
    return moved
