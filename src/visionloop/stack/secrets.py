"""The stack's generated passwords: one JSON file, mode 0600, written whole.

Made once, on the first `stack up`, and read by every later command. The PostgreSQL data
folder and MLflow's user table remember these passwords, so the file belongs with them:
back it up with the data, never commit it (it lives under `.visionloop/`, ignored by git).
"""

from __future__ import annotations

import json
import secrets
import stat
from pathlib import Path

from visionloop.atomic import write_json_atomic
from visionloop.stack.layout import StackError

# One password per role, so a leaked client credential does not open the database.
NAMES = (
    "postgres",  # the cluster's superuser (`visionloop`), used by `stack up` only
    "mlflow_db",  # PostgreSQL role `mlflow`: the tracking and auth databases
    "prefect_db",  # PostgreSQL role `prefect`: the orchestration database
    "mlflow_admin",  # MLflow basic auth, user `admin`
    "mlflow_flask_key",  # MLflow's CSRF secret
    "prefect_api",  # Prefect's API auth string, user `visionloop`
)
PRIVATE = 0o600


def load(path: Path, create: bool) -> dict[str, str]:
    """The secrets in `path`; missing ones are generated (and the file written) if `create`."""
    found = _read(path)
    if found is None and not create:
        raise StackError(f"no stack secrets at {path}; run `visionloop stack up` first")
    found = found or {}
    missing = [name for name in NAMES if not found.get(name)]
    if missing and create:
        found.update({name: secrets.token_urlsafe(24) for name in missing})
        write_json_atomic(path, found, mode=PRIVATE)
    elif missing:
        raise StackError(f"{path} lacks {', '.join(missing)}; run `visionloop stack up` once")
    return found


def _read(path: Path) -> dict[str, str] | None:
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise StackError(
            f"{path} is readable by other users (mode {stat.S_IMODE(mode):o}); "
            f"run `chmod 600 {path}` and consider the passwords in it leaked"
        )
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StackError(f"{path} cannot be read ({exc}); restore it from your backup") from None
    if not isinstance(payload, dict):
        raise StackError(f"{path} is not a JSON object; restore it from your backup")
    return {str(k): str(v) for k, v in payload.items()}
