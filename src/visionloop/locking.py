"""One holder at a time, whoever starts it (a schedule, a new drop, a person): the one lock.

An advisory `flock` on a lock file. The kernel releases it when its holder dies, so a killed
run never leaves a stale lock behind (a lock *file* left over is harmless).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from visionloop.errors import VisionloopError


class AlreadyRunning(VisionloopError):
    """Another process holds the lock; this run is skipped rather than run twice."""


@contextmanager
def exclusive(
    lock_path: Path, what: str, error: type[AlreadyRunning] = AlreadyRunning
) -> Iterator[None]:
    """Hold the lock on lock_path for the block, or raise `error` at once, naming the holder."""
    fd = open_lock_file(lock_path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise error(
                f"another {what} is running (pid {holder}, lock {lock_path}); "
                "this one is skipped, wait for it to finish"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the flock


@contextmanager
def waiting(lock_path: Path) -> Iterator[None]:
    """Hold the lock on lock_path for the block, waiting while another process holds it (for
    short work that a second process should wait for rather than skip or repeat)."""
    fd = open_lock_file(lock_path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def open_lock_file(lock_path: Path) -> int:
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
