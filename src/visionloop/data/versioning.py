"""Data versioning with DVC: the one way in to DVC's Python API, `dvc add` of the raw store,
the default remote, and `dvc push`.

DVC resolves stage names, stage paths and relative remote paths against the process's
working directory, so every in-process use goes through `open_repo`, which moves there for
the duration. The lock keeps two threads of one process (two flow runs) from moving the
working directory under each other. With the repo's `core.autostage`, DVC also stages
`data/raw.dvc` and `data/.gitignore` in git; committing them (and `dvc push`) is left to
the user or the flow. The DVC API is imported only inside these functions.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from visionloop.config import Config
from visionloop.errors import VisionloopError, first_line

_WORKING_DIRECTORY = threading.RLock()
log = logging.getLogger(__name__)


@contextlib.contextmanager
def open_repo(root: Path) -> Iterator[Any]:
    from dvc.repo import Repo

    # DVC prints its own lines to the terminal (its import adds the handlers); passed on to
    # the root logger too, Prefect's console handler in a flow run printed each one twice.
    for name in ("dvc", "dvc_objects", "dvc_data"):
        logging.getLogger(name).propagate = False
    with _WORKING_DIRECTORY, contextlib.chdir(root), Repo(str(root)) as repo:
        yield repo


def is_dvc_project(root: Path) -> bool:
    return (root / ".dvc").is_dir() and (root / "dvc.yaml").is_file()


class DvcTrackingError(VisionloopError):
    """DVC could not record data/raw; the next ingest retries."""


def find_repo_root(config: Config) -> Path:
    """The DVC repository holding data.raw_dir, or a one-line error saying how to get one."""
    from dvc.exceptions import NotDvcRepoError
    from dvc.repo import Repo

    start = config.data.raw_dir.parent
    while not start.exists():
        start = start.parent
    try:
        return Path(Repo.find_root(str(start)))
    except NotDvcRepoError:
        raise DvcTrackingError(
            f"{config.data.raw_dir} is not inside a DVC repository; run `git init && dvc init` "
            f"in the project folder, or set data.dvc.track: false in params.yaml"
        ) from None


def remote_url(config: Config) -> str | None:
    """data.dvc.remote_url with a local folder made absolute (relative to params.yaml's folder).

    DVC writes a local path into .dvc/config relative to that file, so a clone beside the
    original finds the same remote folder.
    """
    url = config.data.dvc.remote_url
    if url is None or "://" in url:
        return url
    return str((config.root / url).resolve())


def track_raw(config: Config) -> None:
    """`dvc add data.raw_dir` and make sure the configured default remote is set."""
    from dvc.exceptions import DvcException

    root = find_repo_root(config)

    def add() -> None:
        with open_repo(root) as repo:
            ensure_remote(repo, config, root)
            # relink=False (`dvc add --no-relink`): the files are already in place, and
            # re-linking every stored file would make each add cost more as the store grows.
            repo.add([str(config.data.raw_dir)], relink=False)

    from dvc.lock import LockError

    wait = config.data.dvc.lock_wait_seconds
    try:
        waiting_for_lock(add, wait)
    except LockError:
        raise DvcTrackingError(
            f"the drops are committed, but another DVC command held the lock of {root} for "
            f"more than data.dvc.lock_wait_seconds ({wait:g} s); run `visionloop data ingest` "
            "again when it has finished (it records them with `dvc add`)"
        ) from None
    except DvcException as exc:
        raise DvcTrackingError(
            f"the drops are committed but `dvc add {config.data.raw_dir}` failed ({exc}); "
            f"fix that and run `visionloop data ingest` again to retry"
        ) from None


def waiting_for_lock(action, wait_seconds: float, pause: float = 1.0):
    """Run `action`; while another DVC process holds the repo lock, retry for up to
    `wait_seconds` (DVC itself gives up after a few seconds). Other errors at once."""
    from dvc.lock import LockError

    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            return action()
        except LockError:
            if time.monotonic() >= deadline:
                raise
            log.info("DVC's lock is held by another process; retrying in %.0f s", pause)
            time.sleep(pause)


def ensure_remote(repo, config: Config, root: Path) -> bool:
    """Set data.dvc.remote_name -> remote_url as the default remote unless it already is."""
    url = remote_url(config)
    if url is None:
        return False
    name = config.data.dvc.remote_name
    current = repo.config.read("repo")
    if current.get("remote", {}).get(name, {}).get("url") == url and (
        current.get("core", {}).get("remote") == name
    ):
        return False
    # DVC takes a relative path as relative to the current folder and stores it relative
    # to .dvc/config, so a clone beside this one finds the same remote folder.
    written = url if "://" in url else os.path.relpath(url)
    with repo.config.edit("repo") as conf:
        conf["remote"][name] = {**conf["remote"].get(name, {}), "url": written}
        conf["core"]["remote"] = name
    if repo.scm_context.autostage:
        repo.scm_context.track_file(str(root / ".dvc" / "config"))
        repo.scm_context.track_changed_files()
    return True


def push(config: Config) -> int:
    """`dvc push` to the default remote (set up first if params name one); files pushed."""
    from dvc.exceptions import DvcException

    root = find_repo_root(config)
    try:
        with open_repo(root) as repo:
            ensure_remote(repo, config, root)
            return repo.push()
    except DvcException as exc:
        raise DvcTrackingError(
            f"`dvc push` failed ({exc}); the data is safe locally, run `dvc push` when the "
            "remote is reachable"
        ) from None


class DataVersionMissing(VisionloopError):
    """A data version recorded in git is in neither the DVC cache nor any remote."""


def restore_into(source_root: Path, workspace: Path, targets: list[str]) -> None:
    """Check out `targets` (.dvc files, stage names) in `workspace`, a git checkout of
    another commit of the project at `source_root`, from that project's DVC cache, else
    its default remote. The workspace shares the cache: nothing is copied twice."""
    from dvc.exceptions import DvcException

    with open_repo(source_root) as source:
        cache_dir = source.cache.local.path
        remotes = {name: conf["url"] for name, conf in source.config["remote"].items()}
        default = source.config["core"].get("remote")
    with open_repo(workspace) as repo, repo.config.edit("local") as conf:
        conf["cache"]["dir"] = cache_dir
        for name, url in remotes.items():  # absolute: the workspace lives elsewhere
            conf["remote"][name] = {"url": url}
        if default:
            conf["core"]["remote"] = default
    try:
        with open_repo(workspace) as repo, _dvc_quiet():
            repo.pull(targets=targets, remote=default)
    except DvcException as exc:
        missing = _missing_targets(exc)
        raise DataVersionMissing(
            f"the data version is in no DVC cache or remote (garbage-collected?): {missing} "
            f"missing from {cache_dir} and remote {remotes.get(default or '', 'none')}"
        ) from None


@contextlib.contextmanager
def _dvc_quiet() -> Iterator[None]:
    """DVC logs each missing file as a multi-line warning; the caller says it in one line."""
    import logging

    # Process-wide for the call: DVC resets its own loggers' levels while it runs.
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _missing_targets(exc: Exception) -> str:
    """DVC's 'Checkout failed for following targets: a, b' as 'a, b'."""
    targets = getattr(exc, "target_infos", None) or getattr(exc, "targets", None)
    if targets:
        return ", ".join(str(t) for t in targets)
    return first_line(exc)
