"""Where MLflow tracks: the embedded default (SQLite file + local artifact folder) or a server.

`MLFLOW_TRACKING_URI`, when set, wins over params (a real `mlflow server`); otherwise a
relative `sqlite:///` path in params is taken relative to the params file's folder, so the
store does not depend on the folder a command is started from.
"""

from __future__ import annotations

import os
from pathlib import Path

from visionloop.config import Config

SQLITE_PREFIX = "sqlite:///"


def tracking_uri(config: Config) -> str:
    uri = os.environ.get("MLFLOW_TRACKING_URI") or config.registry.tracking_uri
    if uri.startswith(SQLITE_PREFIX) and not uri.startswith(SQLITE_PREFIX + "/"):
        uri = SQLITE_PREFIX + str(config.root / uri.removeprefix(SQLITE_PREFIX))
    return uri


def configure_tracking(config: Config) -> str:
    """Point MLflow at the configured store and make sure the experiment exists; its id."""
    import mlflow

    uri = tracking_uri(config)
    if uri.startswith(SQLITE_PREFIX):
        Path(uri.removeprefix(SQLITE_PREFIX)).parent.mkdir(parents=True, exist_ok=True)
    _set_uris_without_exporting(mlflow, uri)
    experiment = mlflow.get_experiment_by_name(config.registry.experiment)
    if experiment is not None:
        return experiment.experiment_id
    # Without an explicit artifact location, a SQLite store writes artifacts to ./mlruns of
    # whatever folder the process happens to be in.
    artifact_root = config.registry.artifact_dir / config.registry.experiment
    return mlflow.create_experiment(
        config.registry.experiment, artifact_location=artifact_root.as_uri()
    )


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
