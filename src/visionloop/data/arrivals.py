"""Which drops in the incoming folder are complete, i.e. safe to ingest now.

A drop is complete when it says so (a `READY` file at the top of a folder drop), or when
nothing in it has changed for `settle_seconds`: a copy still in progress keeps touching
files, so a drop that has been quiet that long is taken as whole. An archive can also be
uploaded under a `.part` name and renamed when done: ingest never lists `.part` names.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from visionloop.atomic import write_json_atomic
from visionloop.config import Config

READY_MARKER = "READY"
# Names that mean "still arriving": skipped, looked at again on the next run.
INCOMPLETE_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".uploading")


def pending_drops(config: Config) -> tuple[list[Path], list[str]]:
    """Drops waiting in data.incoming_dir, oldest name first, and the names skipped."""
    incoming = config.data.incoming_dir
    if not incoming.is_dir():
        return [], []
    drops, skipped = [], []
    for entry in sorted(incoming.iterdir()):
        if entry.name.startswith("."):
            continue  # hidden: the done folder, half-written demo drops, editor files
        if entry.name.lower().endswith(INCOMPLETE_SUFFIXES):
            skipped.append(entry.name)
        else:
            drops.append(entry)
    return drops, skipped


def is_complete(drop: Path, settle_seconds: float, now: float | None = None) -> bool:
    if _has_ready_marker(drop):
        return True
    now = time.time() if now is None else now
    return now - _newest_change(drop) >= settle_seconds


def complete_drops(config: Config) -> list[Path]:
    """The pending drops (as ingest lists them) that are complete now."""
    drops, _still_arriving = pending_drops(config)
    now = time.time()
    return [d for d in drops if is_complete(d, config.flows.settle_seconds, now)]


def _has_ready_marker(drop: Path) -> bool:
    return drop.is_dir() and (drop / READY_MARKER).is_file()


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
    write_json_atomic(state_file, seen)


def _read_announced(state_file: Path) -> dict[str, str]:
    try:
        return json.loads(state_file.read_text())
    except FileNotFoundError:
        return {}
