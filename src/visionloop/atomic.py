"""Files and folders written whole or not at all: built beside the target, then os.replace.

The one writer of every file another stage or a later run reads: the file is flushed and
fsynced before the rename, and the folder after it, so a crash leaves either the old file
or the new one, never a mix. A temporary sibling is named `.<name>.<random>.tmp`; a kill
can leave one behind, and `remove_stale_temp_files` clears those.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from visionloop.errors import with_path

TEMP_SUFFIX = ".tmp"


@contextlib.contextmanager
def open_atomic(path: Path, mode: int = 0o644) -> Iterator[BinaryIO]:
    """A binary handle on a temporary sibling of `path`; when the block ends well the file
    is fsynced and renamed over `path`, else removed (`path` is left as it was). `mode`
    0o600 keeps a secret private from the first byte (the sibling is created 0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(staging, mode)  # mkstemp makes it private; by default an ordinary file
        os.replace(staging, path)
    except OSError as exc:
        Path(staging).unlink(missing_ok=True)
        raise with_path(exc, path) from None  # a handle's write error names no file
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def write_bytes_atomic(path: Path, data: bytes, mode: int = 0o644) -> Path:
    with open_atomic(path, mode) as handle:
        handle.write(data)
    return path


def write_text_atomic(path: Path, text: str, mode: int = 0o644) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"), mode)


def write_json_atomic(path: Path, payload: Any, mode: int = 0o644) -> Path:
    """The one JSON format of the project's files: indented, keys sorted, UTF-8 as is."""
    text = json.dumps(payload, indent=2, sort_keys=True, ensure_ascii=False)
    return write_text_atomic(path, text + "\n", mode)


def remove_stale_temp_files(folder: Path, names: Iterable[str]) -> None:
    """Temporary siblings of the named files, left by a kill during a write (never the files)."""
    for name in names:
        for leftover in folder.glob(f".{name}.*{TEMP_SUFFIX}"):
            leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Yield an empty folder beside `target`; when the block ends well it replaces `target`.

    Readers never see a half-written folder. On an error the staging folder is removed and
    `target` is left as it was. (Folders cannot be swapped in one step: between removing the
    old one and renaming the new one, `target` is briefly absent, never partial.)
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        yield staging
        os.chmod(staging, 0o755)  # mkdtemp makes it private; the result is an ordinary folder
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    fsync_folder(target.parent)


def fsync_folder(folder: Path) -> None:
    """Make a rename in `folder` durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move(source: Path, target: Path) -> None:
    """os.replace, also across filesystems (EXDEV: `data/` and `reports/` on other mounts):
    then copied beside the target whole, renamed into place, and only then the source
    removed, so a kill leaves the source (and at most a temporary sibling) behind."""
    try:
        os.replace(source, target)
        return
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
    if source.is_dir():
        with staged_dir(target) as staging:
            shutil.copytree(source, staging, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(source)
    else:
        with open_atomic(target) as handle, source.open("rb") as original:
            shutil.copyfileobj(original, handle)
        source.unlink()
