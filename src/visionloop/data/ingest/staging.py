"""Screening a drop's files into its stage folder, a bounded window of them at a time.

Files are read in order and decoded on a thread pool (Pillow releases the GIL); at most
`window` decoded files wait in memory, so a large drop costs no more memory than a small
one. Accepted images land in `<stage>/images/...` under their content name, rejected files
in `<stage>/quarantine/files/...`, both invisible to everyone until the commit.
"""

from __future__ import annotations

import hashlib
from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from visionloop.config import IngestConfig
from visionloop.data.ingest.commit import failpoint
from visionloop.data.ingest.layout import DropEntry, placement_reason, quarantine_file, staged_image
from visionloop.data.ingest.readers import DropFile, DropReader, drop_name
from visionloop.data.ingest.reasons import FileReason
from visionloop.data.ingest.screening import Screened, screen
from visionloop.errors import with_path
from visionloop.progress import track


class Stager:
    def __init__(self, rules: IngestConfig, pool: ThreadPoolExecutor, window: int) -> None:
        self.rules = rules
        self.pool = pool
        self.window = window

    def screen_into(
        self,
        reader: DropReader,
        entries: list[DropEntry],
        stage: Path,
        stored: dict[str, str],
        progress: bool,
    ) -> None:
        """Give every entry its verdict and reason; write each file where it belongs."""
        by_source = {id(e.source): e for e in entries}
        pending: deque[tuple[DropEntry, bytes, Future | None]] = deque()
        too_large = []
        for count, (source, data, why) in enumerate(self._read(reader, progress), 1):
            entry = by_source[id(source)]
            if data is None:
                _unread(entry, why)
                too_large += [entry] if entry.reason == FileReason.FILE_TOO_LARGE else []
                continue
            job = self.pool.submit(screen, data, self.rules) if entry.label is not None else None
            pending.append((entry, data, job))
            while len(pending) > self.window:
                _finish(*pending.popleft(), stage, stored)
            if count == len(entries) // 2:
                failpoint("staging")
        while pending:
            _finish(*pending.popleft(), stage, stored)
        for entry in too_large:
            reader.copy_file(entry.source, quarantine_file(stage, entry))

    def _read(
        self, reader: DropReader, progress: bool
    ) -> Iterator[tuple[DropFile, bytes | None, str]]:
        stream = reader.read_all(self.rules.max_file_bytes)
        return track(stream, len(reader.files), drop_name(reader.path), enabled=progress)


def _unread(entry: DropEntry, why: str) -> None:
    if why == "file_too_large":
        entry.reason, entry.detail = FileReason.FILE_TOO_LARGE, f"{entry.source.size} bytes"
    else:
        entry.reason, entry.detail = FileReason.UNREADABLE, why
    entry.verdict = Screened("", entry.reason)


def _finish(
    entry: DropEntry, data: bytes, job: Future | None, stage: Path, stored: dict[str, str]
) -> None:
    if job is None:
        entry.verdict = Screened(hashlib.sha256(data).hexdigest(), None)
        entry.reason, entry.detail = placement_reason(entry)
    else:
        entry.verdict = job.result()
        entry.reason, entry.detail = entry.verdict.reason, entry.verdict.detail
    if entry.reason is not None:
        _write_new(quarantine_file(stage, entry), data)
    elif entry.sha256 not in stored:
        _write_new(stage / staged_image(entry.verdict), data)


def _write_new(path: Path, data: bytes) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.write_bytes(data)
    except OSError as exc:  # a full disk: the error names the file (and so the disk)
        raise with_path(exc, path) from None
