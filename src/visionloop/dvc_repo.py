"""DVC's Python API, opened the way its CLI runs: from the repository's folder.

DVC resolves stage names, stage paths and relative remote paths against the process's
working directory, so every in-process use goes through `open_repo`, which moves there for
the duration. The lock keeps two threads of one process (two flow runs) from moving the
working directory under each other.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_WORKING_DIRECTORY = threading.RLock()


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator[Any]:
    from dvc.repo import Repo

    with _WORKING_DIRECTORY, contextlib.chdir(root), Repo(str(root)) as repo:
        yield repo
