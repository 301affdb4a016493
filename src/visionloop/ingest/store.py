"""The raw dataset on disk: content-addressed images, the manifest, the class map, the ledger.

    <raw_dir>/images/<sha256[:2]>/<sha256>.<ext>   original bytes, named by content
    <raw_dir>/manifest.csv                        one row per stored image (source of truth)
    <raw_dir>/classes.json                        {"version": N, "classes": [...]}
    <raw_dir>/drops.json                          drops ingested (identity, counts) and the
                                                  sha256s banned by a label conflict

Each file is replaced whole (temporary sibling + os.replace), never edited in place.
"""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionloop.errors import VisionloopError

MANIFEST = "manifest.csv"
CLASSES = "classes.json"
LEDGER = "drops.json"
IMAGES = "images"

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
    "path",
    "ingested_at",
)


class CorruptStore(VisionloopError):
    """A file of data/raw is unreadable; restoring it from DVC is the fix."""


def image_relpath(sha256: str, extension: str) -> str:
    return f"{IMAGES}/{sha256[:2]}/{sha256}.{extension}"


@dataclass
class RawState:
    """Everything ingest needs to know about what is already stored."""

    rows: list[dict[str, str]] = field(default_factory=list)
    class_version: int = 0
    classes: list[str] = field(default_factory=list)
    drops: list[dict[str, Any]] = field(default_factory=list)
    conflicts: dict[str, list[str]] = field(default_factory=dict)  # sha256 -> labels seen

    def labels_by_sha(self) -> dict[str, str]:
        return {row["sha256"]: row["label"] for row in self.rows}

    def drop_by_content(self, content_sha256: str) -> dict[str, Any] | None:
        return next((d for d in self.drops if d["content_sha256"] == content_sha256), None)


def load_state(raw_dir: Path) -> RawState:
    state = RawState()
    state.rows = read_manifest(raw_dir)
    state.class_version, state.classes = read_classes(raw_dir)
    ledger = read_json(raw_dir / LEDGER, {"drops": [], "label_conflicts": {}})
    state.drops = list(ledger.get("drops", []))
    state.conflicts = dict(ledger.get("label_conflicts", {}))
    return state


def read_manifest(raw_dir: Path) -> list[dict[str, str]]:
    path = raw_dir / MANIFEST
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        missing = set(MANIFEST_COLUMNS) - set(reader.fieldnames or ())
        if missing:
            raise CorruptStore(
                f"{path}: missing columns {sorted(missing)}; "
                f"restore it with `dvc checkout {raw_dir.name}`"
            )
        return list(reader)


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


def write_manifest(raw_dir: Path, rows: list[dict[str, str]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({c: row.get(c, "") for c in MANIFEST_COLUMNS} for row in rows)
    atomic_write_text(raw_dir / MANIFEST, buffer.getvalue())


def write_classes(raw_dir: Path, version: int, classes: list[str]) -> None:
    write_json(raw_dir / CLASSES, {"version": version, "classes": classes})


def write_ledger(raw_dir: Path, drops: list[dict[str, Any]], conflicts: dict[str, list]) -> None:
    payload = {"drops": drops, "label_conflicts": dict(sorted(conflicts.items()))}
    write_json(raw_dir / LEDGER, payload)


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, ensure_ascii=False) + "\n")


def atomic_write_text(path: Path, text: str) -> None:
    """Write to a temporary sibling, flush it to disk, then os.replace: never half-written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptStore(
            f"{path}: not valid JSON ({exc}); restore it with `dvc checkout`"
        ) from None
