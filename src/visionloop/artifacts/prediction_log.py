"""The prediction log: every image `visionloop serve` answered, for monitoring to read.

`<serving.prediction_log>/<YYYY-MM-DD>.jsonl`, one file per UTC day, one JSON object per
image and line (keys in `FIELDS`):

    {"time": "2026-12-01T20:10:38.123Z", "request_id": "...", "sha256": "...",
     "model": "visionloop-classifier", "version": "3", "runtime": "onnx", "label": "7",
     "confidence": 0.98, "top_k": [{"label": "7", "probability": 0.98}, ...],
     "width": 640, "height": 480, "format": "JPEG", "stored": false}

Append-only. Each call of `append` writes its lines with one `write` on a file opened with
O_APPEND, under a lock, so concurrent requests of one server process never interleave
partial lines (and O_APPEND keeps whole lines from several processes on a local disk apart
too). Lines reach the kernel before the response is sent; they are not fsynced one by one.

With `serving.keep_images: true` the image bytes go to a content-addressed store,
`<serving.image_store>/<sha256[:2]>/<sha256>.<ext>` (written whole, once per content), and
the line says `"stored": true`.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from visionloop.atomic import write_bytes_atomic
from visionloop.images import EXTENSIONS

FIELDS = (
    "time",
    "request_id",
    "sha256",
    "model",
    "version",
    "runtime",
    "label",
    "confidence",
    "top_k",
    "width",
    "height",
    "format",
    "stored",
)
SUFFIX = ".jsonl"


def now_iso() -> str:
    """UTC time with milliseconds, the log's `time` format."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def day_file(folder: Path, day: date) -> Path:
    return folder / f"{day.isoformat()}{SUFFIX}"


def image_path(store: Path, sha256: str, image_format: str) -> Path:
    extension = EXTENSIONS.get(image_format.upper(), image_format.lower() or "bin")
    return store / sha256[:2] / f"{sha256}.{extension}"


class PredictionLog:
    """The writer: one per server process, shared by all its request handlers."""

    def __init__(self, folder: Path, image_store: Path | None = None) -> None:
        self.folder = folder
        self.image_store = image_store  # None: image bytes are not kept
        self._lock = threading.Lock()

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        by_day: dict[str, list[str]] = {}
        for record in records:
            line = json.dumps({key: record.get(key) for key in FIELDS}, ensure_ascii=False)
            by_day.setdefault(record["time"][:10], []).append(line + "\n")
        with self._lock:
            self.folder.mkdir(parents=True, exist_ok=True)
            for day, lines in by_day.items():
                self._write(day_file(self.folder, date.fromisoformat(day)), "".join(lines))

    @staticmethod
    def _write(path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            data = text.encode("utf-8")
            while data:  # a short write is rare on a local disk, but possible
                written = os.write(fd, data)
                data = data[written:]
        finally:
            os.close(fd)

    def keep_image(self, sha256: str, image_format: str, data: bytes) -> bool:
        """Store the bytes by content (once); False when the store is off."""
        if self.image_store is None:
            return False
        path = image_path(self.image_store, sha256, image_format)
        if not path.exists():
            write_bytes_atomic(path, data)
        return True


def log_files(folder: Path) -> list[Path]:
    """The day files, oldest first."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix == SUFFIX and p.is_file())


def read_predictions(folder: Path, since: date | None = None) -> Iterator[dict[str, Any]]:
    """Every logged prediction, oldest first (from the day `since` on, when given).

    A last line still being written (no newline yet) is left for the next read.
    """
    for path in log_files(folder):
        if since is not None and path.stem < since.isoformat():
            continue
        with path.open("rb") as handle:
            for raw in handle:
                if raw.endswith(b"\n"):
                    yield json.loads(raw)
