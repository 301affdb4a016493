"""The raw store, written by ingest and read by every later stage: its one owner.

    <raw_dir>/images/<sha256[:2]>/<sha256>.<ext>   original bytes, named by content
    <raw_dir>/manifest.csv                        one row per stored image (source of truth)
    <raw_dir>/classes.json                        {"version": N, "classes": [...]}
    <raw_dir>/drops.json                          drops ingested (identity, counts) and the
                                                  sha256s banned by a label conflict

Each file is replaced whole (visionloop.atomic), never edited in place. Its names, readers
and writers live here and nowhere else.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionloop.atomic import remove_stale_temp_files, write_json_atomic, write_text_atomic
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

    labels: dict[str, str] = field(default_factory=dict)  # sha256 -> label of stored images
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


def stored_labels(raw_dir: Path) -> dict[str, str]:
    """sha256 -> label of every stored image, read fast: a drop's cost must not grow much
    with the size of the store."""
    path = raw_dir / MANIFEST
    if not path.exists():
        return {}
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split(",")
    # sha256 (hex) and label (a safe folder name) lead each row and are never quoted.
    if header[:2] == ["sha256", "label"] and not any('"' in line[65:66] for line in lines[1:]):
        return dict(line.split(",", 2)[:2] for line in lines[1:])
    return {row["sha256"]: row["label"] for row in read_manifest(raw_dir)}


def locate_images(raw_dir: Path, shas: list[str]) -> dict[str, Path]:
    """Path of each image (images/<sha[:2]>/<sha>.<ext>), listing only the folders needed."""
    wanted = set(shas)
    found: dict[str, Path] = {}
    for prefix in sorted({sha[:2] for sha in wanted}):
        folder = raw_dir / IMAGES / prefix
        entries = folder.iterdir() if folder.is_dir() else ()
        found.update({p.name.split(".")[0]: p for p in entries if p.name.split(".")[0] in wanted})
    missing = wanted - set(found)
    if missing:
        example = sorted(missing)[0]
        raise VisionloopError(
            f"{raw_dir}: {len(missing)} images in the manifest have no file (e.g. {example}); "
            "run `dvc pull` or re-ingest"
        )
    return found


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
        header = next(reader, [])
        missing = set(MANIFEST_COLUMNS) - set(header)
        if missing:
            raise CorruptStore(
                f"{path}: missing columns {sorted(missing)}; "
                f"restore it with `dvc checkout {raw_dir.name}`"
            )
        return header, list(reader)


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
        text = _csv_text([list(MANIFEST_COLUMNS)] + [_cells(r) for r in rows])
        new = [_cells(r) for r in add if r["sha256"] not in present]
    else:
        text = path.read_text(encoding="utf-8")
        text += "" if text.endswith("\n") else "\n"
        if next(csv.reader([text.partition("\n")[0]])) != list(MANIFEST_COLUMNS):
            raise CorruptStore(f"{path}: unexpected columns; restore it with `dvc checkout`")
        # A drop's rows are appended in one replace: if its first row is there, all are.
        done = bool(add) and f"\n{add[0]['sha256']}," in text
        new = [] if done else [_cells(r) for r in add]
    write_text_atomic(path, text + _csv_text(new))


def _cells(row: dict[str, str]) -> list[str]:
    return [row.get(column, "") for column in MANIFEST_COLUMNS]


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
    """Temporary siblings of the store's files left by a kill during a write."""
    remove_stale_temp_files(raw_dir, (MANIFEST, CLASSES, LEDGER))


def read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CorruptStore(
            f"{path}: not valid JSON ({exc}); restore it with `dvc checkout`"
        ) from None
