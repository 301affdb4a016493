"""Offline, quiet defaults for the tools visionloop drives: the one place they are set.

Applied by the CLI entry point and by the test suite before Prefect, MLflow, DVC or
Great Expectations are imported (Prefect reads its settings at import). A value the user
already exported wins, so a real server or an opted-in telemetry setting is respected.
"""

from __future__ import annotations

import os
from pathlib import Path

OFFLINE_DEFAULTS: dict[str, str] = {
    "DO_NOT_TRACK": "true",  # MLflow accepts only "true"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DVC_NO_ANALYTICS": "1",
    "GX_ANALYTICS_ENABLED": "False",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",  # no bars in flow logs and CI output
    # MLflow's INFO lines ("Creating initial MLflow database tables...") are its own
    # bookkeeping; warnings and errors still show.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # The temporary Prefect server needs more than the 20 s default on 2 cores.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
}


def apply_offline_defaults(prefect_home: Path | None = None) -> dict[str, str]:
    """Set each default the environment does not already have; return what was set."""
    wanted = dict(OFFLINE_DEFAULTS)
    if prefect_home is not None:
        wanted["PREFECT_HOME"] = str(prefect_home)
    applied = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(applied)
    return applied
