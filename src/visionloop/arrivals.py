"""Which drops in the incoming folder are complete, i.e. safe to ingest now.

A drop is complete when it says so (a `READY` marker file inside a folder drop, or a
`<archive>.ready` file beside an archive), or when nothing in it has changed for
`settle_seconds`: a copy still in progress keeps touching files, so a drop that has been
quiet that long is taken as whole.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from visionloop.atomic import write_text_atomic

READY_MARKER = "READY"
ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith(ARCHIVE_SUFFIXES)


def candidate_drops(incoming_dir: Path) -> list[Path]:
    """Folders and archives in incoming_dir; hidden entries are staging or bookkeeping."""
    if not incoming_dir.is_dir():
        return []
    return sorted(
        p
        for p in incoming_dir.iterdir()
        if not p.name.startswith(".") and (p.is_dir() or is_archive(p))
    )


def is_complete(drop: Path, settle_seconds: float, now: float | None = None) -> bool:
    if _has_ready_marker(drop):
        return True
    now = time.time() if now is None else now
    return now - _newest_change(drop) >= settle_seconds


def complete_drops(incoming_dir: Path, settle_seconds: float) -> list[Path]:
    now = time.time()
    return [d for d in candidate_drops(incoming_dir) if is_complete(d, settle_seconds, now)]


def _has_ready_marker(drop: Path) -> bool:
    if drop.is_dir():
        return (drop / READY_MARKER).is_file()
    return drop.with_name(drop.name + ".ready").is_file()


def _newest_change(drop: Path) -> float:
    if drop.is_file():
        return drop.stat().st_mtime
    times = [p.lstat().st_mtime for p in drop.rglob("*")]
    return max([drop.stat().st_mtime, *times])


def drop_signature(drop: Path) -> str:
    """Changes whenever the drop's content could have: file count, bytes, newest change."""
    files = [drop] if drop.is_file() else [p for p in drop.rglob("*") if p.is_file()]
    size = sum(p.stat().st_size for p in files)
    return f"{len(files)}:{size}:{_newest_change(drop):.6f}"


def unannounced(drops: list[Path], state_file: Path) -> list[Path]:
    """The drops not yet announced in this exact state (a re-copied drop counts as new)."""
    seen = _read_announced(state_file)
    return [d for d in drops if seen.get(d.name) != drop_signature(d)]


def mark_announced(drops: list[Path], state_file: Path) -> None:
    seen = _read_announced(state_file) | {d.name: drop_signature(d) for d in drops}
    write_text_atomic(state_file, json.dumps(seen, indent=2, sort_keys=True) + "\n")


def _read_announced(state_file: Path) -> dict[str, str]:
    try:
        return json.loads(state_file.read_text())
    except FileNotFoundError:
        return {}
