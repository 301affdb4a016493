"""`stack up | down | status`: bring each part up when it is not, check it, say what runs.

`up` is idempotent: a part that runs and answers is left alone, one that is down is started
(so `up` also repairs a stack where one server died), and nothing is deployed again unless
prefect.yaml changed. `down` stops everything in reverse order. `status` asks each part
itself (the process, then its health endpoint), so it tells the truth after a crash.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

import yaml

from visionloop.atomic import write_json_atomic
from visionloop.config import Config
from visionloop.stack import http, postgres, processes, secrets, servers
from visionloop.stack.layout import HOST, Layout, StackError
from visionloop.stack.prefect_api import PrefectApi

Echo = Callable[[str], None]
ALWAYS_ON_TAG = "always-on"  # prefect.yaml tags a deployment that should always have a run
ACTIVE_STATES = ["SCHEDULED", "PENDING", "RUNNING"]
STOP_TIMEOUT_SECONDS = 30


@dataclass(frozen=True)
class Part:
    name: str
    up: bool
    where: str
    pid: int | None = None
    detail: str = ""


# ---- up ---------------------------------------------------------------------------------


def up(config: Config, echo: Echo) -> None:
    layout = Layout.of(config)
    if not postgres.installed():
        raise StackError(f"PostgreSQL {postgres.MAJOR} is not installed; {postgres.INSTALL_HINT}")
    if importlib.util.find_spec("flask_wtf") is None:
        raise StackError(
            "MLflow's basic-auth app needs Flask-WTF, which is missing: `pip install -c "
            "constraints.txt -e .` (or `make install`) installs it"
        )
    passwords = secrets.load(layout.secrets, create=True)
    _postgres_up(config, layout, passwords, echo)
    starting = {
        "mlflow": _server_up(
            config, layout, "mlflow", *servers.mlflow_server(config, layout, passwords), echo
        ),
        "prefect": _server_up(
            config, layout, "prefect", *servers.prefect_server(config, passwords), echo
        ),
    }
    for name, process in starting.items():  # started side by side, waited for in turn
        if process is not None:
            _wait_healthy(config, layout, name, process)
            echo(f"{name}: started, {_where(config, name)} (pid {process.pid})")
    api = PrefectApi(config, passwords)
    _worker_up(config, layout, passwords, api, echo)
    _deploy(config, layout, passwords, api, echo)
    for name in _start_always_on(config, api):
        echo(f"prefect: started a run of {name} (always on)")


def _postgres_up(config: Config, layout: Layout, passwords: dict[str, str], echo: Echo) -> None:
    port = config.stack.postgres_port
    current = postgres.state(layout)
    if current.note:
        echo(f"postgres: {current.note}")
    if current.running:
        echo(f"postgres: already running, {HOST}:{port} (pid {current.pid})")
    else:
        postgres.check_version(layout)
        _refuse_busy_port("postgres", port)
        if postgres.initialise(layout, passwords["postgres"]):
            echo(f"postgres: initialised a new cluster in {layout.pgdata}")
        postgres.start(layout, port, config.stack.startup_timeout_seconds)
        echo(f"postgres: started, {HOST}:{port} (pid {postgres.state(layout).pid})")
    postgres.ensure_databases(port, passwords)


def _server_up(
    config: Config, layout: Layout, name: str, argv: list[str], env: dict[str, str], echo: Echo
) -> subprocess.Popen | None:
    """Start a server unless it runs and answers; the new process (None when it ran)."""
    current = processes.state(layout.pid_file(name))
    if current.note:
        echo(f"{name}: {current.note}")
    if current.running:
        if http.wait_until(lambda: http.healthy(_health_url(config, name)), 15, lambda: True):
            echo(f"{name}: already running, {_where(config, name)} (pid {current.pid})")
            return None
        raise StackError(
            f"{name} (pid {current.pid}) runs but does not answer on {_health_url(config, name)};"
            f" see {layout.log_file(name)}, then `visionloop stack down` and `up` again"
        )
    _refuse_busy_port(name, _port(config, name))
    return processes.spawn(
        argv,
        env=env,
        cwd=config.root,
        pid_file=layout.pid_file(name),
        log_file=layout.log_file(name),
    )


def _refuse_busy_port(name: str, port: int) -> None:
    if processes.listening(port):
        raise StackError(
            f"port {port} on {HOST} is already in use by another program, so {name} cannot "
            f"start there: stop that program, or set stack.{name}_port in params.yaml"
        )


def _wait_healthy(config: Config, layout: Layout, name: str, process: subprocess.Popen) -> None:
    url = _health_url(config, name)
    timeout = config.stack.startup_timeout_seconds
    if http.wait_until(lambda: http.healthy(url), timeout, lambda: process.poll() is None):
        return
    log = layout.log_file(name)
    if process.poll() is not None:
        layout.pid_file(name).unlink(missing_ok=True)
        raise StackError(
            f"{name} exited with status {process.returncode} while starting "
            f"({processes.log_tail(log)}); see {log}"
        )
    processes.stop(layout.pid_file(name), STOP_TIMEOUT_SECONDS)
    raise StackError(
        f"{name} did not answer on {url} within {timeout:g} s "
        f"(stack.startup_timeout_seconds); stopped it; see {log}"
    )


def _worker_up(
    config: Config, layout: Layout, passwords: dict[str, str], api: PrefectApi, echo: Echo
) -> None:
    current = processes.state(layout.pid_file("worker"))
    if current.note:
        echo(f"worker: {current.note}")
    if current.running:
        echo(f"worker: already running, pool {config.stack.work_pool} (pid {current.pid})")
        return
    for run in api.crash_orphaned_runs():
        echo(f"prefect: flow run {run!r} had lost its worker; marked Crashed")
    started = datetime.now(UTC)
    process = processes.spawn(
        servers.worker(config),
        env=servers.project_env(config, passwords),
        cwd=config.root,
        pid_file=layout.pid_file("worker"),
        log_file=layout.log_file("worker"),
    )
    if not http.wait_until(
        lambda: api.worker_online(since=started),
        config.stack.startup_timeout_seconds,
        lambda: process.poll() is None,
    ):
        log = layout.log_file("worker")
        processes.stop(layout.pid_file("worker"), STOP_TIMEOUT_SECONDS)
        raise StackError(f"the worker did not come online ({processes.log_tail(log)}); see {log}")
    echo(f"worker: started, pool {config.stack.work_pool} (pid {process.pid})")


def _deploy(
    config: Config, layout: Layout, passwords: dict[str, str], api: PrefectApi, echo: Echo
) -> None:
    """`prefect deploy --all` when prefect.yaml changed since the last deploy, or is missing
    some of its deployments on the server."""
    prefect_yaml = config.root / "prefect.yaml"
    if not prefect_yaml.is_file():
        echo(f"worker: no {prefect_yaml.name} in {config.root}; nothing deployed")
        return
    digest = hashlib.sha256(prefect_yaml.read_bytes()).hexdigest()
    wanted = {d["name"] for d in yaml.safe_load(prefect_yaml.read_text())["deployments"]}
    if _read_state(layout).get("deployed") == digest and wanted <= api.deployment_names():
        echo(f"prefect: {len(wanted)} deployments of {prefect_yaml.name} already deployed")
        return
    log = layout.log_file("deploy")
    with log.open("ab") as output:
        done = subprocess.run(
            servers.deploy(),
            cwd=config.root,
            env=servers.project_env(config, passwords),
            stdout=output,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    if done.returncode != 0:
        raise StackError(f"`prefect deploy --all` failed ({processes.log_tail(log)}); see {log}")
    write_json_atomic(layout.state, {**_read_state(layout), "deployed": digest})
    echo(f"prefect: deployed {', '.join(sorted(wanted))} from {prefect_yaml.name}")


def _start_always_on(config: Config, api: PrefectApi) -> list[str]:
    started = []
    for deployment in api.deployments(tags=[ALWAYS_ON_TAG]):
        if not api.flow_runs(deployment_ids=[deployment["id"]], states=ACTIVE_STATES):
            api.create_flow_run(deployment["id"])
            started.append(deployment["name"])
    return started


def _read_state(layout: Layout) -> dict:
    try:
        return json.loads(layout.state.read_text())
    except (OSError, ValueError):
        return {}


# ---- down -------------------------------------------------------------------------------


def down(config: Config, echo: Echo) -> None:
    layout = Layout.of(config)
    for name in ("worker", "prefect", "mlflow"):
        pid = processes.state(layout.pid_file(name)).pid
        if processes.stop(layout.pid_file(name), STOP_TIMEOUT_SECONDS):
            echo(f"{name}: stopped (pid {pid})")
        else:
            echo(f"{name}: was not running")
    pid = postgres.state(layout).pid
    if postgres.stop(layout):
        echo(f"postgres: stopped (pid {pid})")
    else:
        echo("postgres: was not running")


# ---- status -----------------------------------------------------------------------------


def status(config: Config) -> list[Part]:
    layout = Layout.of(config)
    passwords = _passwords_if_any(layout)
    parts = [_postgres_part(config, layout, passwords)]
    for name in ("mlflow", "prefect"):
        parts.append(_server_part(config, layout, name))
    parts.append(_worker_part(config, layout, passwords, prefect_up=parts[-1].up))
    return parts


def _passwords_if_any(layout: Layout) -> dict[str, str] | None:
    try:
        return secrets.load(layout.secrets, create=False)
    except StackError:
        return None


def _postgres_part(config: Config, layout: Layout, passwords: dict[str, str] | None) -> Part:
    current = postgres.state(layout)
    where = f"{HOST}:{config.stack.postgres_port}"
    if not current.running:
        return Part("postgres", False, where, detail=current.note or f"data: {layout.pgdata}")
    try:
        if passwords is None:
            raise StackError(f"no readable {layout.secrets}")
        postgres.connect(config.stack.postgres_port, passwords["postgres"]).close()
    except StackError as exc:
        return Part("postgres", False, where, current.pid, f"runs but refuses logins: {exc}")
    return Part("postgres", True, where, current.pid, f"data: {layout.pgdata}")


def _server_part(config: Config, layout: Layout, name: str) -> Part:
    current = processes.state(layout.pid_file(name))
    where = _where(config, name)
    if not current.running:
        return Part(name, False, where, detail=current.note or "not running")
    if not http.healthy(_health_url(config, name)):
        detail = f"process runs but does not answer; see {layout.log_file(name)}"
        return Part(name, False, where, current.pid, detail)
    detail = ""
    if name == "mlflow":
        detail = f"artifacts: {servers.artifacts_destination(config, layout)}"
    return Part(name, True, where, current.pid, detail)


def _worker_part(
    config: Config, layout: Layout, passwords: dict[str, str] | None, prefect_up: bool
) -> Part:
    current = processes.state(layout.pid_file("worker"))
    where = f"pool {config.stack.work_pool}"
    if not current.running:
        return Part("worker", False, where, detail=current.note or "not running")
    if not prefect_up or passwords is None:
        return Part("worker", False, where, current.pid, "runs, but its Prefect server is down")
    api = PrefectApi(config, passwords)
    if not api.worker_online():
        return Part("worker", False, where, current.pid, "runs but is not online in its pool")
    names = sorted(f"{d['flow_name']}/{d['name']}" for d in api.deployments(with_flow_names=True))
    return Part("worker", True, where, current.pid, f"deployments: {', '.join(names) or 'none'}")


def status_lines(parts: list[Part]) -> list[str]:
    lines = []
    for part in parts:
        state = "up" if part.up else "DOWN"
        pid = f"pid {part.pid}" if part.pid else "-"
        lines.append(f"{part.name:<9}{state:<6}{part.where:<28}{pid:<11}{part.detail}".rstrip())
    return lines


def status_json(parts: list[Part]) -> list[dict]:
    return [asdict(part) for part in parts]


def env_lines(config: Config) -> list[str]:
    """`export` lines for a shell: `eval "$(visionloop stack env)"`."""
    import shlex

    passwords = secrets.load(Layout.of(config).secrets, create=False)
    env = servers.client_env(config, passwords)
    return [f"export {key}={shlex.quote(value)}" for key, value in env.items()]


# ---- helpers ----------------------------------------------------------------------------


def _port(config: Config, name: str) -> int:
    return {"mlflow": config.stack.mlflow_port, "prefect": config.stack.prefect_port}[name]


def _where(config: Config, name: str) -> str:
    return {"mlflow": servers.mlflow_url(config), "prefect": servers.prefect_api_url(config)}[name]


def _health_url(config: Config, name: str) -> str:
    return f"{_where(config, name)}/health"


def where_lines(config: Config) -> list[str]:
    """Where to look once the stack is up."""
    return [
        f"MLflow UI:  {servers.mlflow_url(config)}  (user {servers.MLFLOW_ADMIN}, password in "
        f"{Layout.of(config).secrets})",
        f"Prefect UI: http://{HOST}:{config.stack.prefect_port}",
        'point a shell at it: eval "$(visionloop stack env)"',
    ]
