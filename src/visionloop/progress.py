"""Progress for long loops: a bar with counts and ETA on a terminal, silence in CI and logs."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def track(items: Iterable[T], total: int, description: str) -> Iterator[T]:
    """A progress bar with counts and ETA on a terminal; nothing at all when not on a TTY."""
    if not sys.stderr.isatty() or total < 100:
        yield from items
        return
    from rich.console import Console
    from rich.progress import track as rich_track

    yield from rich_track(items, description=description, total=total, console=Console(stderr=True))
