"""The split table, written by the split stage and read by prepare and the lineage tags.

<split.dir>/split.csv        sha256,label,split,group,phash,drop_id,reason: one row per
                             image of the manifest; an image never changes split
<split.dir>/state.json       what split.csv was made with and its digest (a DVC persist
                             output, so the next run continues it)
<split.dir>/audit.json       cross-split near-duplicate pairs, counts per split and class
<split.dir>/summary.json     its scalars, flat: the split's DVC metrics
<split.dir>/class_counts.csv images per class and split (a DVC plot)
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionloop.atomic import write_json_atomic, write_text_atomic
from visionloop.errors import VisionloopError

SPLITS = ("train", "val", "test")
EXCLUDED = "excluded"
SPLIT_FILE = "split.csv"
STATE_FILE = "state.json"
AUDIT_FILE = "audit.json"
SUMMARY_FILE = "summary.json"
CLASS_COUNTS_FILE = "class_counts.csv"
COLUMNS = ("sha256", "label", "split", "group", "phash", "drop_id", "reason")


@dataclass(frozen=True)
class Row:
    sha256: str
    label: str
    split: str  # train, val, test or excluded
    group: str
    phash: str  # 16 hex digits
    drop_id: str
    reason: str


def path(split_dir: Path) -> Path:
    return split_dir / SPLIT_FILE


def write_split(split_dir: Path, rows: Iterable[Row], made_with: dict[str, Any]) -> None:
    """split.csv, then state.json with its digest (a crash between them forces a replay)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([getattr(row, c) for c in COLUMNS] for row in rows)
    text = buffer.getvalue()
    write_text_atomic(split_dir / SPLIT_FILE, text)
    state = {"params": made_with, "split_csv_sha256": hashlib.sha256(text.encode()).hexdigest()}
    write_json_atomic(split_dir / STATE_FILE, state)


def read_previous(split_dir: Path, made_with: dict[str, Any]) -> tuple[dict[str, Row], str]:
    """The previous rows by sha256, or nothing (with the reason) when they cannot be continued."""
    try:
        state = json.loads((split_dir / STATE_FILE).read_text())
        text = (split_dir / SPLIT_FILE).read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}, "none: split from scratch"
    if state.get("params") != made_with:
        return {}, "split params changed: split from scratch"
    if state.get("split_csv_sha256") != hashlib.sha256(text.encode()).hexdigest():
        return {}, "split.csv was edited: split from scratch"
    return {row.sha256: row for row in parse_rows(text)}, "continued"


def read_split(split_dir: Path) -> list[Row]:
    """split.csv as rows, or a one-line error when the split stage has not run."""
    try:
        text = path(split_dir).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VisionloopError(
            f"{path(split_dir)}: no split; run `visionloop stage split` first"
        ) from None
    return parse_rows(text)


def read_assignments(split_dir: Path) -> Iterator[tuple[str, str, str]]:
    """(sha256, label, split) of each row, streamed: what prepare needs, without holding a
    Row per image (memory stays small however many images there are)."""
    try:
        handle = path(split_dir).open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise VisionloopError(
            f"{path(split_dir)}: no split; run `visionloop stage split` first"
        ) from None
    with handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        sha, label, split = (header.index(c) for c in ("sha256", "label", "split"))
        for cells in reader:
            yield cells[sha], sys.intern(cells[label]), sys.intern(cells[split])


def parse_rows(text: str) -> list[Row]:
    return [Row(**{c: r[c] for c in COLUMNS}) for r in csv.DictReader(io.StringIO(text))]


def write_audit(split_dir: Path, audit: dict[str, Any]) -> None:
    """The audit, and its scalars as the DVC metric (the per-class counts are a plot, so
    `dvc metrics show` stays a handful of numbers whatever the number of classes)."""
    write_json_atomic(split_dir / AUDIT_FILE, audit)
    write_json_atomic(split_dir / SUMMARY_FILE, audit_scalars(audit))


def audit_scalars(audit: dict[str, Any]) -> dict[str, Any]:
    per_split = {f"{split}_images": n for split, n in audit["images_per_split"].items()}
    scalars = {k: v for k, v in audit.items() if isinstance(v, int | float | str)}
    return {**scalars, **per_split}


def write_class_counts(split_dir: Path, audit: dict[str, Any]) -> None:
    """Images per class and split, one `class/split` a row: the data of the split's DVC plot."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["class_split", "images"])
    for label, counts in audit["per_class"].items():
        writer.writerows([f"{label}/{split}", counts[split]] for split in SPLITS)
    write_text_atomic(split_dir / CLASS_COUNTS_FILE, buffer.getvalue())
