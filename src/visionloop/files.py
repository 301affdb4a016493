"""Small file helpers: whole-or-nothing writes and a progress bar that stays quiet in CI."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")


def write_text_atomic(path: Path, text: str) -> Path:
    """Write to a temporary file in the same folder, then os.replace it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8", newline="") as temp:
            temp.write(text)
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    return path


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """A progress bar with counts and ETA on a terminal; nothing at all when not on a TTY."""
    if not sys.stderr.isatty() or total < 100:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, console=Console(stderr=True))
