"""Registered versions kept on this machine: downloaded once, checked on every use.

A retrain loaded the champion twice (the drop checks, the gate) and each load downloaded the
whole MLflow model again: over HTTP, 17 folder listings and about 117 files, 2 to 4.5 s. Now
a version is downloaded once into `registry.cache_folder/<entry>` and reused; every use runs
the same check a fresh download gets (the caller's `check`: the bundle's files against the
version's `bundle_sha256` tag), so a local copy changed since it was downloaded (tampered, a
damaged disk, a half-deleted folder) is never used: it is downloaded again.

- The entry's name hashes the registry URI, model name, version and recorded digest
  (`entry_name`): another tracking server, model or version never meets it, and a registry
  rebuilt with the same version numbers gets new entries.
- Filled whole or not at all: downloaded into a staging folder beside the entry, checked
  there, then renamed into place (`atomic.staged_dir`); a copy that fails its check is never
  published.
- One filler at a time (a lock file in the folder): a second process wanting the same
  version waits, then finds it filled instead of downloading it again. Readers take no lock.
- Bounded: after each fill only the `keep` most recently used entries stay (a use touches
  its entry first, so an entry being loaded is the newest, not the one removed).
- `fresh=True` downloads the registry's copy and checks it however intact the local one is:
  moving an alias asks for it, so `@champion` only ever moves to a version whose stored files
  are intact, as every other user of the registry will download them.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from visionloop.atomic import staged_dir
from visionloop.locking import waiting

T = TypeVar("T")
LOCK_FILE = ".lock"


def entry_name(registry_uri: str, name: str, version: str, digest: str | None) -> str:
    """Readable for people (`visionloop-classifier-v3-...`), unique by the hash."""
    key = hashlib.sha256("\n".join((registry_uri, name, version, str(digest))).encode())
    readable = re.sub(r"[^\w.-]", "_", name)[:64]
    return f"{readable}-v{version}-{key.hexdigest()[:16]}"


def checked(
    cache: Path,
    keep: int,
    key: str,
    fill: Callable[[Path], None],
    check: Callable[[Path], T],
    fresh: bool = False,
) -> T:
    """check(entry) for the cache entry `key`, downloaded by fill(folder) when it is missing or
    fails its check; with `fresh` the registry's copy is downloaded and checked as well.
    Raises check's error when a download fails it."""
    entry = cache / key
    if not fresh and (found := local_check(entry, check)) is not None:
        return found
    with waiting(cache / LOCK_FILE):
        clear_leftovers(cache)
        found = local_check(entry, check)  # perhaps filled while this process waited
        if found is not None:
            if fresh:  # the local copy stays (a reader may be loading it); identical bundle
                check_download(cache, fill, check)
            return found
        if entry.exists():  # failed its check: never used again, even if the download fails
            discard(entry)
        with staged_dir(entry) as staging:
            fill(staging)
            check(staging)  # a copy that fails is never published (staging removed)
        os.utime(entry)  # the newest, whatever the download's file times
        prune(cache, keep)
    return check(entry)


def check_download(cache: Path, fill: Callable[[Path], None], check: Callable[[Path], T]) -> None:
    """Download into a scratch folder and check it: the registry's own copy must pass."""
    with tempfile.TemporaryDirectory(prefix=".fresh-", dir=cache) as scratch:
        fill(Path(scratch))
        check(Path(scratch))


def local_check(entry: Path, check: Callable[[Path], T]) -> T | None:
    """check(entry), or None when the entry is missing or fails it in any way."""
    try:
        os.utime(entry)  # first: a concurrent prune keeps the entry being used
    except OSError:
        return None
    try:
        return check(entry)
    except Exception:  # any failure of a local copy means: download it again (whose check says why)
        return None


def clear_leftovers(cache: Path) -> None:
    """Staging and discarded folders of killed processes. Only under the lock: every fill
    holds it, so no staging folder found then belongs to a live one."""
    for leftover in hidden_folders(cache):
        shutil.rmtree(leftover, ignore_errors=True)


def prune(cache: Path, keep: int) -> None:
    """Keep the `keep` most recently used entries; the others are removed whole."""
    entries = [p for p in cache.iterdir() if p.is_dir() and not p.name.startswith(".")]
    entries.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    for old in entries[keep:]:
        discard(old)


def discard(entry: Path) -> None:
    """Renamed aside first, so a reader finds the entry whole or absent, never half-deleted."""
    aside = entry.with_name(f".{entry.name}.{uuid.uuid4().hex[:8]}.discarded")
    os.replace(entry, aside)
    shutil.rmtree(aside, ignore_errors=True)


def hidden_folders(cache: Path) -> list[Path]:
    return [p for p in cache.iterdir() if p.is_dir() and p.name.startswith(".")]
