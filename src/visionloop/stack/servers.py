"""The command lines and environments of the stack's servers, and of its clients.

Credentials travel in environment variables and 0600 files, never on a command line (which
every user of the machine can read in `ps`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from visionloop.atomic import write_text_atomic
from visionloop.config import Config
from visionloop.env import OFFLINE_DEFAULTS
from visionloop.stack import postgres
from visionloop.stack.layout import HOST, Layout
from visionloop.stack.secrets import PRIVATE

MLFLOW_ADMIN = "admin"
PREFECT_USER = "visionloop"
# Variables of a shell pointed at another server that must not leak into the stack's own.
_FOREIGN = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI", "PREFECT_API_URL", "PREFECT_API_KEY")


def mlflow_url(config: Config) -> str:
    return f"http://{HOST}:{config.stack.mlflow_port}"


def prefect_api_url(config: Config) -> str:
    return f"http://{HOST}:{config.stack.prefect_port}/api"


def prefect_auth_string(passwords: dict[str, str]) -> str:
    return f"{PREFECT_USER}:{passwords['prefect_api']}"


def client_env(config: Config, passwords: dict[str, str]) -> dict[str, str]:
    """What points the project (CLI, flows, DVC stages, a notebook) at the stack."""
    return {
        "MLFLOW_TRACKING_URI": mlflow_url(config),
        "MLFLOW_TRACKING_USERNAME": MLFLOW_ADMIN,
        "MLFLOW_TRACKING_PASSWORD": passwords["mlflow_admin"],
        "PREFECT_API_URL": prefect_api_url(config),
        "PREFECT_API_AUTH_STRING": prefect_auth_string(passwords),
    }


def artifacts_destination(config: Config, layout: Layout) -> str:
    return config.stack.artifacts or str(layout.artifacts)


def _base_env(config: Config) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _FOREIGN}
    for key, value in OFFLINE_DEFAULTS.items():
        env.setdefault(key, value)
    env.setdefault("PREFECT_HOME", str(config.flows.prefect_home))
    return env


def mlflow_server(config: Config, layout: Layout, passwords: dict[str, str]):
    """argv and env of `mlflow server` with basic auth: nobody but the admin sees anything."""
    port = config.stack.postgres_port
    auth_db = postgres.url("psycopg", "mlflow", passwords["mlflow_db"], port, "mlflow_auth")
    write_text_atomic(
        layout.mlflow_auth_config,
        "[mlflow]\n"
        "default_permission = NO_PERMISSIONS\n"
        f"database_uri = {auth_db}\n"
        f"admin_username = {MLFLOW_ADMIN}\n"
        f"admin_password = {passwords['mlflow_admin']}\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
        "grant_default_workspace_access = false\n"
        # Checking a password costs ~0.4 s of PBKDF2 on 2 cores, on every request; logging a
        # model makes dozens. Remember a good one for a minute (per worker process).
        "auth_cache_ttl_seconds = 60\n",
        mode=PRIVATE,
    )
    destination = artifacts_destination(config, layout)
    if "://" not in destination:
        Path(destination).mkdir(parents=True, exist_ok=True)
    argv = [
        *(sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth"),
        *("--host", HOST, "--port", str(config.stack.mlflow_port)),
        *("--workers", str(config.stack.mlflow_workers)),
        *("--serve-artifacts", "--artifacts-destination", destination),
    ]
    env = _base_env(config) | {
        "MLFLOW_BACKEND_STORE_URI": postgres.url(
            "psycopg", "mlflow", passwords["mlflow_db"], port, "mlflow"
        ),
        "MLFLOW_AUTH_CONFIG_PATH": str(layout.mlflow_auth_config),
        # MLflow's job runner (GenAI scorers, prompt optimisation; visionloop uses none): five
        # more processes of ~250 MB each, and their start's CPU.
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",
        "MLFLOW_FLASK_SERVER_SECRET_KEY": passwords["mlflow_flask_key"],
    }
    return argv, env


def prefect_server(config: Config, passwords: dict[str, str]):
    argv = [
        *(sys.executable, "-m", "prefect", "server", "start"),
        *("--host", HOST, "--port", str(config.stack.prefect_port)),
    ]
    env = _base_env(config) | {
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": postgres.url(
            "asyncpg", "prefect", passwords["prefect_db"], config.stack.postgres_port, "prefect"
        ),
        "PREFECT_SERVER_API_AUTH_STRING": prefect_auth_string(passwords),
        # The UI asks the browser to call this URL; it would otherwise say port 4200.
        "PREFECT_UI_API_URL": prefect_api_url(config),
        "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": str(
            config.stack.queue_retry_seconds
        ),
    }
    return argv, env


def project_env(config: Config, passwords: dict[str, str]) -> dict[str, str]:
    """The worker's environment, inherited by every flow run it starts: the project's code
    and venv first, pointed at the stack (prefect.yaml's pull step reads the project dir)."""
    env = _base_env(config) | client_env(config, passwords)
    root = str(config.root)
    env["VISIONLOOP_PROJECT_DIR"] = root
    env["PREFECT_WORKER_QUERY_SECONDS"] = str(config.stack.worker_poll_seconds)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    env["PATH"] = os.pathsep.join((str(Path(sys.executable).parent), env.get("PATH", "")))
    return env


def worker_name(config: Config) -> str:
    return f"{config.stack.work_pool}-{os.uname().nodename}"


def worker(config: Config) -> list[str]:
    """A process worker; it creates the work pool on first start."""
    return [
        *(sys.executable, "-m", "prefect", "worker", "start"),
        *("--pool", config.stack.work_pool, "--type", "process"),
        *("--name", worker_name(config), "--install-policy", "never"),
    ]


def deploy() -> list[str]:
    return [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
