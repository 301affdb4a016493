"""The raw store, written by ingest and read by every later stage: its one owner.

    <raw_dir>/shards/<drop_id>.tar    one uncompressed tar per drop: its accepted images'
                                      original bytes, member `<sha256>.<ext>`; never
                                      changed once written (DVC tracks it as one object)
    <raw_dir>/manifest.csv            one row per stored image (source of truth): sha256 ->
                                      (drop_id, member, offset, bytes), its member index
    <raw_dir>/classes.json            {"version": N, "classes": [...]}
    <raw_dir>/drops.json              drops ingested (identity, counts) and the sha256s
                                      banned by a label conflict

Each file is written whole (visionloop.atomic), never edited in place. Images are read
straight from their shard at the manifest's offset (no extraction). Its names, readers
and writers live here and nowhere else. The layout before shards (one file per image under
`images/`, a `path` column) is read only by `visionloop data migrate`.
"""

from __future__ import annotations

import csv
import functools
import io
import json
import os
import shutil
import tarfile
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionloop.atomic import (
    TEMP_SUFFIX,
    open_atomic,
    remove_stale_temp_files,
    write_json_atomic,
    write_text_atomic,
)
from visionloop.errors import VisionloopError

MANIFEST = "manifest.csv"
CLASSES = "classes.json"
LEDGER = "drops.json"
SHARDS = "shards"
LEGACY_IMAGES = "images"  # the layout before shards: images/<sha[:2]>/<sha>.<ext>
BLOCK = 512  # a tar member is one header block, then its bytes padded to whole blocks

# Columns of manifest.csv, in order (documented in docs/data.md).
MANIFEST_COLUMNS = (
    "sha256",
    "label",
    "source_name",
    "drop_id",
    "format",
    "mode",
    "width",
    "height",
    "frames",
    "orientation",
    "normalisation",
    "bytes",
    "member",
    "offset",
    "ingested_at",
)
# The layout before shards had one `path` (images/...) where `member` and `offset` are now.
LEGACY_COLUMNS = (*MANIFEST_COLUMNS[:12], "path", "ingested_at")


class CorruptStore(VisionloopError):
    """A file of data/raw is unreadable; restoring it from DVC is the fix."""


class LegacyLayout(VisionloopError):
    """data/raw still holds one file per image; `visionloop data migrate` converts it."""


class MissingImages(VisionloopError):
    """A shard the manifest lists is not there (not pulled, or deleted)."""


@functools.cache  # one string per drop, shared by its members' Member objects
def shard_relpath(drop_id: str) -> str:
    """The drop's shard, relative to raw_dir."""
    return f"{SHARDS}/{drop_id}.tar"


def member_name(sha256: str, extension: str) -> str:
    return f"{sha256}.{extension}"


@dataclass(frozen=True, slots=True)
class Member:
    """Where one stored image's bytes are: a byte range of its drop's shard."""

    sha256: str
    shard: str  # relative to raw_dir
    name: str  # the tar member's name, <sha256>.<ext>
    offset: int  # where its bytes start in the shard
    size: int


def member_of(row: dict[str, str]) -> Member:
    return Member(
        row["sha256"],
        shard_relpath(row["drop_id"]),
        row["member"],
        int(row["offset"]),
        int(row["bytes"]),
    )


# ---------------------------------------------------------------- shards


def member_offsets(sizes: Iterable[int]) -> list[int]:
    """Where each member's bytes start in a shard `write_shard` writes, from their sizes:
    known before the shard is written, so the commit plan can hold them."""
    offsets, position = [], 0
    for size in sizes:
        offsets.append(position + BLOCK)
        position += BLOCK + _padded(size)
    return offsets


def write_shard(path: Path, members: Iterable[tuple[str, bytes]]) -> list[int]:
    """An uncompressed tar of (name, bytes), written whole; the offset of each member's bytes.

    Deterministic (no times, owners or extended headers): the same members give the same
    bytes, so DVC stores one object for them. Readable by any tar tool.
    """
    offsets = []
    with (
        open_atomic(path) as handle,
        tarfile.open(fileobj=handle, mode="w", format=tarfile.USTAR_FORMAT) as tar,
    ):
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o444
            start = tar.offset
            tar.addfile(info, io.BytesIO(data))
            if tar.offset != start + BLOCK + _padded(len(data)):
                raise ValueError(f"{name}: a member header longer than one block")
            offsets.append(start + BLOCK)
    return offsets


def _padded(size: int) -> int:
    return -(-size // BLOCK) * BLOCK


def read_members(raw_dir: Path, members: Iterable[Member]) -> Iterator[tuple[Member, bytes]]:
    """Each member's bytes, read straight from its shard at its offset (nothing extracted).

    One shard is open at a time: give members grouped by shard, in offset order
    (`reading_order`), and the reads are sequential.
    """
    current, fd = "", -1
    try:
        for member in members:
            if member.shard != current:
                if fd >= 0:
                    os.close(fd)
                fd, current = _open_shard(raw_dir, member.shard), member.shard
            data = os.pread(fd, member.size, member.offset)
            if len(data) != member.size:
                raise CorruptStore(
                    f"{raw_dir / member.shard}: ends before {member.name}; restore it with "
                    f"`dvc checkout {raw_dir.name}`"
                )
            yield member, data
    finally:
        if fd >= 0:
            os.close(fd)


def read_member(raw_dir: Path, member: Member) -> bytes:
    return next(read_members(raw_dir, [member]))[1]


def reading_order(members: Iterable[Member]) -> list[Member]:
    return sorted(members, key=lambda m: (m.shard, m.offset))


def rows_present(raw_dir: Path, rows: list[dict[str, str]]) -> list[bool]:
    """`members_present` for manifest rows; False for a row whose place cannot be read."""
    members = [_member_or_none(row) for row in rows]
    found = iter(members_present(raw_dir, [m for m in members if m is not None]))
    return [m is not None and next(found) for m in members]


def _member_or_none(row: dict[str, str]) -> Member | None:
    try:
        return member_of(row)
    except (KeyError, ValueError):
        return None


def members_present(raw_dir: Path, members: list[Member]) -> list[bool]:
    """For each member: its shard is there, is long enough, and holds a tar header with the
    member's name and size just before its offset (one 512-byte read per image)."""
    present = []
    for shard, group in _by_shard(members):
        try:
            fd = os.open(raw_dir / shard, os.O_RDONLY)
        except OSError:
            present += [(m, False) for m in group]
            continue
        try:
            end = os.fstat(fd).st_size
            present += [(m, m.offset + m.size <= end and _header_matches(fd, m)) for m in group]
        finally:
            os.close(fd)
    found = {id(m): ok for m, ok in present}
    return [found[id(m)] for m in members]


def _by_shard(members: list[Member]) -> Iterator[tuple[str, list[Member]]]:
    groups: dict[str, list[Member]] = {}
    for member in members:
        groups.setdefault(member.shard, []).append(member)
    yield from groups.items()


def _header_matches(fd: int, member: Member) -> bool:
    if member.offset < BLOCK:
        return False
    header = os.pread(fd, BLOCK, member.offset - BLOCK)
    try:
        info = tarfile.TarInfo.frombuf(header, "utf-8", "surrogateescape")
    except tarfile.HeaderError:
        return False
    return info.name == member.name and info.size == member.size and info.isreg()


def _open_shard(raw_dir: Path, shard: str) -> int:
    try:
        return os.open(raw_dir / shard, os.O_RDONLY)
    except FileNotFoundError:
        raise MissingImages(
            f"{raw_dir / shard}: missing, though the manifest lists images in it; "
            f"run `dvc pull` (or `dvc checkout {raw_dir.name}`)"
        ) from None


# ---------------------------------------------------------------- what is stored


@dataclass
class RawState:
    """Everything ingest needs to know about what is already stored."""

    labels: Mapping[str, str] = field(default_factory=dict)  # sha256 -> label, stored images
    class_version: int = 0
    classes: list[str] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)  # sha256 -> labels seen

    def drop_by_content(self, content_sha256: str) -> dict[str, Any] | None:
        return next((d for d in self.drops if d["content_sha256"] == content_sha256), None)


def load_state(raw_dir: Path) -> RawState:
    state = RawState()
    state.labels = stored_labels(raw_dir)
    state.class_version, state.classes = read_classes(raw_dir)
    state.drops, state.conflicts = read_ledger(raw_dir)
    return state


def read_ledger(raw_dir: Path) -> tuple[list[dict[str, Any]], dict[str, list[str]]]:
    """(drops ingested, sha256 -> labels of every label conflict seen)."""
    ledger = read_json(raw_dir / LEDGER, {"drops": [], "label_conflicts": {}})
    return list(ledger.get("drops", [])), dict(ledger.get("label_conflicts", {}))


def read_manifest(raw_dir: Path) -> list[dict[str, str]]:
    """Every row as a dict (for readers that want all columns)."""
    header, rows = _read_table(raw_dir)
    return [dict(zip(header, row, strict=True)) for row in rows]


def require_manifest(raw_dir: Path) -> list[dict[str, str]]:
    """`read_manifest` for the stages after ingest, where a missing manifest is an error."""
    path = raw_dir / MANIFEST
    if not path.exists():
        raise VisionloopError(f"{path}: no manifest; ingest a drop first (visionloop data ingest)")
    return read_manifest(raw_dir)


def stored_members(raw_dir: Path, shas: Collection[str]) -> dict[str, Member]:
    """sha256 -> Member for the given images, keeping only those rows in memory."""
    wanted = {sha: sha for sha in shas}  # the callers' strings, reused: memory per image
    found = {row["sha256"]: member_of(row) for row in stored_rows(raw_dir, wanted)}
    missing = set(wanted) - set(found)
    if missing:
        raise VisionloopError(
            f"{raw_dir / MANIFEST}: {len(missing)} images are not in the manifest "
            f"(e.g. {min(missing)}); run the split stage again"
        )
    return found


def stored_rows(raw_dir: Path, shas: Mapping[str, str]) -> Iterator[dict[str, str]]:
    """The manifest rows of the given images (keys of `shas`, mapped to the string each row's
    sha256 reuses), one at a time in manifest order: memory holds one row."""
    path = raw_dir / MANIFEST
    if not shas or not path.exists():
        return
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = _check_header(path, next(reader, []))
        for cells in reader:
            if cells[0] in shas:
                yield dict(zip(header, cells, strict=True), sha256=shas[cells[0]])


def stored_labels(raw_dir: Path) -> Mapping[str, str]:
    """sha256 -> label of every stored image, read fast: a drop's cost must not grow much
    with the size of the store."""
    path = raw_dir / MANIFEST
    if not path.exists():
        return {}
    data = path.read_bytes()
    if data.startswith(b"sha256,label,"):
        return StoredLabels(data)
    return {row["sha256"]: row["label"] for row in read_manifest(raw_dir)}


class StoredLabels(Mapping[str, str]):
    """sha256 -> label, looked up in the manifest's bytes: each row's sha256 (the 64 hex
    digits that lead it) is cut out by numpy, its first 16 digits sorted as integers, and a
    label is read only when asked for. A drop asks about its own images, so the store's
    size costs a few loops in C, not a Python dict of every image."""

    def __init__(self, data: bytes) -> None:
        import numpy as np

        self._np, self._data = np, data
        text = np.frombuffer(data, dtype=np.uint8)
        starts = np.flatnonzero(text == ord("\n")) + 1  # every row starts after a newline
        starts = starts[starts + 64 <= len(data)]  # not the end of the file
        values, shifts = _hex_digits()
        keys = np.bitwise_or.reduce(values[text[starts[:, None] + np.arange(16)]] << shifts, 1)
        order = np.argsort(keys, kind="stable")
        self._keys, self._starts = keys[order], starts[order]

    def _row_start(self, sha: str) -> int | None:
        try:
            key = int(sha[:16], 16)
        except ValueError:
            return None
        # an array of one, not a scalar: numpy searches it without converting the keys
        at = int(self._np.searchsorted(self._keys, self._np.array([key], self._keys.dtype))[0])
        wanted = sha.encode()
        while at < len(self._keys) and int(self._keys[at]) == key:  # same 16 digits: compare all
            start = int(self._starts[at])
            if self._data[start : start + 65] == wanted + b",":
                return start
            at += 1
        return None

    def __contains__(self, sha: object) -> bool:
        return isinstance(sha, str) and self._row_start(sha) is not None

    def __getitem__(self, sha: str) -> str:
        start = self._row_start(sha)
        if start is None:
            raise KeyError(sha)
        end = self._data.find(b"\n", start)
        line = self._data[start : end if end >= 0 else None].decode("utf-8")
        # a label is a safe folder name, so csv never quotes it; parse the row if it did
        return next(csv.reader([line]))[1] if line[65:66] == '"' else line[65 : line.index(",", 65)]

    def __iter__(self) -> Iterator[str]:
        return (self._data[s : s + 64].decode() for s in self._starts.tolist())

    def __len__(self) -> int:
        return len(self._keys)


@functools.cache
def _hex_digits():
    """The value of each hex digit's byte, and the shift of each of 16 digits in a uint64."""
    import numpy as np

    values = np.zeros(256, dtype=np.uint64)
    for value, digit in enumerate(b"0123456789abcdef"):
        values[digit] = value
    return values, np.arange(60, -4, -4, dtype=np.uint64)


def is_legacy(raw_dir: Path) -> bool:
    """True while data/raw is in the layout before shards (one file per image)."""
    path = raw_dir / MANIFEST
    if not path.exists():
        return False
    with path.open(newline="", encoding="utf-8") as handle:
        return _is_legacy_header(next(csv.reader(handle), []))


def require_current_layout(raw_dir: Path) -> None:
    if is_legacy(raw_dir):
        raise _legacy_layout(raw_dir)


def _is_legacy_header(header: list[str]) -> bool:
    return "path" in header and "member" not in header


def _legacy_layout(raw_dir: Path) -> LegacyLayout:
    return LegacyLayout(
        f"{raw_dir} holds one file per image (the layout before shards); run "
        "`visionloop data migrate` once to convert it in place"
    )


def stored_row(raw_dir: Path, sha256: str) -> dict[str, str]:
    return next(row for row in read_manifest(raw_dir) if row["sha256"] == sha256)


def count_images(raw_dir: Path) -> int:
    """Rows in the manifest: its lines less the header (no field ever holds a newline)."""
    path = raw_dir / MANIFEST
    return max(path.read_bytes().count(b"\n") - 1, 0) if path.exists() else 0


def _read_table(raw_dir: Path) -> tuple[list[str], list[list[str]]]:
    path = raw_dir / MANIFEST
    if not path.exists():
        return list(MANIFEST_COLUMNS), []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = _check_header(path, next(reader, []))
        return header, list(reader)


def _check_header(path: Path, header: list[str]) -> list[str]:
    if _is_legacy_header(header):
        raise _legacy_layout(path.parent)
    missing = set(MANIFEST_COLUMNS) - set(header)
    if missing:
        raise CorruptStore(
            f"{path}: missing columns {sorted(missing)}; "
            f"restore it with `dvc checkout {path.parent.name}`"
        )
    return header


def read_legacy_manifest(raw_dir: Path) -> list[dict[str, str]]:
    """The manifest of the layout before shards (for `visionloop data migrate` only)."""
    path = raw_dir / MANIFEST
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if rows and set(LEGACY_COLUMNS) - set(rows[0]):
        raise CorruptStore(f"{path}: not a manifest of one file per image; nothing to migrate")
    return rows


def read_classes(raw_dir: Path) -> tuple[int, list[str]]:
    """(version, class names in index order); (0, []) before the first drop."""
    raw = read_json(raw_dir / CLASSES, {"version": 0, "classes": []})
    version, classes = raw.get("version"), raw.get("classes")
    if not isinstance(version, int) or not isinstance(classes, list):
        raise CorruptStore(
            f"{raw_dir / CLASSES}: expected {{'version': N, 'classes': [...]}}; "
            f"restore it with `dvc checkout`"
        )
    return version, [str(c) for c in classes]


def require_classes(raw_dir: Path) -> tuple[int, list[str]]:
    """`read_classes` for the stages after ingest, where a missing class map is an error."""
    if not (raw_dir / CLASSES).exists():
        raise VisionloopError(
            f"{raw_dir / CLASSES}: no class map; ingest a drop first (visionloop data ingest)"
        )
    return read_classes(raw_dir)


# ---------------------------------------------------------------- writers


def update_manifest(raw_dir: Path, add: list[dict[str, str]], remove: set[str]) -> None:
    """Replace the manifest with rows added (unless present) and removed, by sha256.

    Idempotent, so a commit can be replayed. Without removals the existing text is kept
    as it is and the new rows are appended, so a drop costs little however large the
    manifest already is.
    """
    path = raw_dir / MANIFEST
    if remove or not path.exists():
        rows = [r for r in read_manifest(raw_dir) if r["sha256"] not in remove]
        present = {r["sha256"] for r in rows}
        rows += [r for r in add if r["sha256"] not in present]
        write_text_atomic(path, manifest_text(rows))
    else:
        _append_rows(path, add)


def _append_rows(path: Path, add: list[dict[str, str]]) -> None:
    """The manifest copied as it is (never parsed: it is the one store file that grows with
    the store, and every drop copies it) with the drop's rows after it."""
    rows = _csv_text([_cells(r) for r in add]).encode("utf-8")
    size = path.stat().st_size
    with path.open("rb") as manifest:
        header = next(csv.reader([manifest.readline().decode("utf-8")]), [])
        if header != list(MANIFEST_COLUMNS):
            _check_header(path, header)  # says what is wrong when it can
            raise CorruptStore(f"{path}: unexpected columns; restore it with `dvc checkout`")
        manifest.seek(max(size - len(rows) - 1, 0))
        tail = manifest.read()
        # A drop's rows are appended in one replace, last: there already if the file ends so.
        if not rows or tail.endswith(b"\n" + rows):
            return
        manifest.seek(0)
        with open_atomic(path) as handle:
            shutil.copyfileobj(manifest, handle, 2**20)
            handle.write((b"" if tail.endswith(b"\n") else b"\n") + rows)


def manifest_text(rows: Iterable[dict[str, str]]) -> str:
    """The whole manifest, header first, for rows in the current layout."""
    return _csv_text([list(MANIFEST_COLUMNS)] + [_cells(r) for r in rows])


def _cells(row: dict[str, str]) -> list[str]:
    return [str(row.get(column, "")) for column in MANIFEST_COLUMNS]


def _csv_text(rows: list[list[str]]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    return buffer.getvalue()


def write_classes(raw_dir: Path, version: int, classes: list[str]) -> None:
    write_json_atomic(raw_dir / CLASSES, {"version": version, "classes": classes})


def write_ledger(raw_dir: Path, drops: list[dict[str, Any]], conflicts: dict[str, list]) -> None:
    payload = {"drops": drops, "label_conflicts": dict(sorted(conflicts.items()))}
    write_json_atomic(raw_dir / LEDGER, payload)


def remove_stale_temp_files_in(raw_dir: Path) -> None:
    """Temporary siblings of the store's files (a shard half-written) left by a kill."""
    remove_stale_temp_files(raw_dir, (MANIFEST, CLASSES, LEDGER))
    for leftover in (raw_dir / SHARDS).glob(f".*{TEMP_SUFFIX}"):
        leftover.unlink(missing_ok=True)


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptStore(
            f"{path}: not valid JSON ({exc}); restore it with `dvc checkout`"
        ) from None
