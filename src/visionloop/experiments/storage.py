"""Where Optuna keeps studies: derived from the tracking store, in this one place.

MLflow and Optuna both keep their schema version in an `alembic_version` table, so they
cannot share one database: beside a SQLite tracking store the study goes in `optuna.db`
in the same folder; behind the stack's MLflow server (MLFLOW_TRACKING_URI pointing at it)
in the stack's PostgreSQL, database `optuna`. `tune.storage` set to a URL wins.
"""

from __future__ import annotations

from pathlib import Path

from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.tracking import SQLITE_PREFIX, tracking_uri

STUDY_DB = "optuna.db"
STACK_DATABASE = "optuna"


def study_storage_url(config: Config) -> str:
    """The SQLAlchemy URL of the study storage (see the module's docstring)."""
    if config.tune.storage != "auto":
        return config.tune.storage
    uri = tracking_uri(config)
    if uri.startswith(SQLITE_PREFIX):
        folder = Path(uri.removeprefix(SQLITE_PREFIX)).parent
        folder.mkdir(parents=True, exist_ok=True)
        return SQLITE_PREFIX + str(folder / STUDY_DB)
    if uri.startswith(("postgresql", "mysql")):  # a database-backed tracking URI itself
        return uri.rsplit("/", 1)[0] + "/" + STACK_DATABASE
    return _stack_postgres_url(config, uri)


def _stack_postgres_url(config: Config, uri: str) -> str:
    from visionloop.stack import postgres, secrets, servers
    from visionloop.stack.layout import Layout

    if uri.rstrip("/") != servers.mlflow_url(config).rstrip("/"):
        raise VisionloopError(
            f"tune.storage: auto cannot derive a study database from the tracking server {uri}; "
            "set tune.storage to a SQLAlchemy URL (postgresql+psycopg://...)"
        )
    passwords = secrets.load(Layout.of(config).secrets, create=False)
    return postgres.url(
        "psycopg", "mlflow", passwords["mlflow_db"], config.stack.postgres_port, STACK_DATABASE
    )


def open_storage(url: str):
    """Optuna's RDB storage; one line when the database cannot be opened."""
    import optuna
    import sqlalchemy.exc

    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=_engine_kwargs(url))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, ValueError) as exc:
        raise VisionloopError(
            f"cannot open the study storage {without_password(url)}: {exc}"
        ) from None


def _engine_kwargs(url: str) -> dict:
    # Worker processes write to one SQLite file: wait for its lock rather than fail at once.
    return {"connect_args": {"timeout": 60}} if url.startswith(SQLITE_PREFIX) else {}


def without_password(url: str) -> str:
    """The URL without its password, for messages."""
    if "@" not in url or "://" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"
