"""MLflow, one way in: where it tracks, the one place a run is started or resumed, and the
one reader of the git state recorded with runs and registered versions.

`MLFLOW_TRACKING_URI`, when set, wins over params (a real `mlflow server`); otherwise a
relative `sqlite:///` path in params is taken relative to the params file's folder, so the
store does not depend on the folder a command is started from. A tracking server is asked
for its health before each use, so a server that is down or refuses the credentials ends
the command with one line instead of minutes of retries.
"""

from __future__ import annotations

import logging
import os
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from visionloop.config import Config
from visionloop.errors import VisionloopError

log = logging.getLogger(__name__)
SQLITE_PREFIX = "sqlite:///"
# MLflow's HTTP settings taken from params (registry section) unless the user set them.
HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "http_max_retries",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "http_timeout_seconds",
}
_exported: dict[str, str] = {}  # the values this module put in the environment
CREDENTIALS_HINT = (
    "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD "
    '(for `visionloop stack`: eval "$(visionloop stack env)")'
)


class TrackingServerError(VisionloopError):
    """The MLflow tracking server does not answer, or refuses the credentials."""


def tracking_uri(config: Config) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config.registry.tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        uri = SQLITE_PREFIX + str(config.root / uri.removeprefix(SQLITE_PREFIX))
    return uri


def configure_tracking(config: Config) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; its id."""
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = tracking_uri(config)
    if uri.startswith(SQLITE_PREFIX):
        create_sqlite_store_whole(Path(uri.removeprefix(SQLITE_PREFIX)))
    if is_server(uri):
        apply_http_settings(config)
        check_server(uri, config.registry.health_timeout_seconds)
    _set_uris_without_exporting(mlflow, uri)
    try:
        experiment = mlflow.get_experiment_by_name(config.registry.experiment)
    except MlflowException as exc:
        if exc.error_code in ("UNAUTHENTICATED", "PERMISSION_DENIED"):
            raise TrackingServerError(
                f"the MLflow tracking server {uri} refused the request ({exc.error_code}): "
                + CREDENTIALS_HINT
            ) from None
        raise
    if experiment is not None:
        return experiment.experiment_id
    if is_server(uri):  # the server keeps the artifacts (its --artifacts-destination)
        return mlflow.create_experiment(config.registry.experiment)
    # Without an explicit artifact location, a SQLite store writes artifacts to ./mlruns of
    # whatever folder the process happens to be in.
    artifact_root = config.registry.artifact_dir / config.registry.experiment
    return mlflow.create_experiment(
        config.registry.experiment, artifact_location=artifact_root.as_uri()
    )


def create_sqlite_store_whole(path: Path) -> None:
    """Create a new SQLite tracking store beside its path, then link it into place.

    MLflow creates its tables and runs its migrations in place (seconds on a loaded
    machine); a kill in between left a database every later command failed on (`table ...
    already exists`). Linked, not renamed: a concurrent creator never replaces a store that
    another process has already written to."""
    if path.exists():
        return
    from mlflow.store.db.utils import _initialize_tables, create_sqlalchemy_engine

    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    staging.unlink(missing_ok=True)
    try:
        engine = create_sqlalchemy_engine(SQLITE_PREFIX + str(staging))
        try:
            _initialize_tables(engine)
        finally:
            engine.dispose()
        os.link(staging, path)
    except FileExistsError:
        pass  # another process created it first: use theirs
    finally:
        staging.unlink(missing_ok=True)


def is_server(uri: str) -> bool:
    return uri.startswith(("http://", "https://"))


def apply_http_settings(config: Config) -> None:
    """MLflow's retry and timeout settings from params, where the user has not set them
    (MLflow reads them from the environment at every request)."""
    for key, field in HTTP_SETTINGS.items():
        current = os.environ.get(key)
        if current is None or current == _exported.get(key):
            os.environ[key] = _exported[key] = str(getattr(config.registry, field))


def check_server(uri: str, timeout: float) -> None:
    """One line when the tracking server does not answer its (unauthenticated) /health."""
    try:
        with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=timeout):
            return
    except urllib.error.HTTPError as exc:
        reason = f"HTTP {exc.code} from /health"
    except (OSError, ValueError) as exc:
        reason = str(getattr(exc, "reason", exc))
    raise TrackingServerError(
        f"the MLflow tracking server {uri} does not answer within {timeout:g} s ({reason}): "
        "check the URI and that the server runs (for the "
        "stack: `visionloop stack status`, `visionloop stack up`), or unset "
        "MLFLOW_TRACKING_URI to track in the project's own store"
    )


def start_run(
    config: Config,
    run_id: str | None,
    run_name: str,
    parent_run_id: str | None = None,
    tags: dict[str, str] | None = None,
):
    """Resume run `run_id`, or start a new run named `run_name` when there is none (or it
    cannot be resumed); `parent_run_id` makes it a child run (the MLflow UI nests it), also
    from another process. MLflow's ActiveRun: use it in a `with`, or end it with end_run."""
    import mlflow
    from mlflow.exceptions import MlflowException

    experiment_id = configure_tracking(config)
    if run_id is not None:
        try:
            return mlflow.start_run(run_id=run_id)
        except MlflowException as exc:
            log.warning("cannot continue MLflow run %s (%s); starting a new run", run_id, exc)
    tags = dict(tags or {})
    if parent_run_id is not None:
        # The tag, not nested=True: the parent is active in another process (tune workers).
        tags[PARENT_TAG] = parent_run_id
    return mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags or None)


PARENT_TAG = "mlflow.parentRunId"
RUN_NAME_TAG = "mlflow.runName"


def run_name(
    kind: str,
    data: str | None = None,
    version: str | int | None = None,
    trial: int | None = None,
) -> str:
    """What a run is, as the MLflow UI lists it, the one naming rule: `train digits-003`,
    `train digits-003 v4` once registered as version 4, `tune visionloop` (a study's parent
    run), `tune trial 7`, `reproduce v4`."""
    words = [kind]
    if trial is not None:
        words.append(f"trial {trial}")
    if data:
        words.append(data)
    if version is not None:
        words.append(f"v{version}")
    return " ".join(words)


def _set_uris_without_exporting(mlflow, uri: str) -> None:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; this module would then read
    that back as the user's override, and every later config (another project, a test's
    tmp_path) would log into the first store. Keep the environment as the user left it."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


# ---- lineage ----------------------------------------------------------------------------


@dataclass(frozen=True)
class GitState:
    commit: str | None  # None: not a git repository (or git is missing)
    dirty: bool | None


def git_state(folder: Path) -> GitState:
    """The commit checked out in `folder` and whether the tree has uncommitted changes,
    not counting the files the pipeline itself writes (`is_pipeline_bookkeeping`)."""
    commit = _git(folder, "rev-parse", "HEAD")
    if commit is None:
        return GitState(None, None)
    status = _git(folder, "status", "--porcelain", "--untracked-files=all") or ""
    # "XY path" or "XY old -> new"; the first line's leading space is stripped by _git
    changed = [
        line.split(maxsplit=1)[1].split(" -> ")[-1].strip('"') for line in status.splitlines()
    ]
    return GitState(commit, any(not is_pipeline_bookkeeping(path) for path in changed))


def is_pipeline_bookkeeping(path: str) -> bool:
    """Files DVC and ingest write while the pipeline runs (dvc.lock, data/raw.dvc, the
    .gitignore files DVC adds its outputs to): the commit plus these hashes pins the run, so
    they do not make a run's code dirty. Commit them after a run: `git add -A && git commit`."""
    name = path.rsplit("/", 1)[-1]
    return name in ("dvc.lock", ".gitignore") or name.endswith(".dvc")


def _git(folder: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(
            ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def git_tags(state: GitState) -> dict[str, str]:
    if state.commit is None:
        return {"git.commit": "unknown"}
    return {"git.commit": state.commit, "git.dirty": str(state.dirty).lower()}
