"""`visionloop stack` on bad ground, before any server starts: each case ends with one line
that says what is wrong and what to do, and `stack status` tells the truth.
(The running stack, its probes and a server dying mid-flow: test_stack.py.)"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess

import pytest
import yaml

from tests.helpers import REPO_PARAMS, run_cli
from visionloop.config import load_config
from visionloop.stack import control, postgres
from visionloop.stack.layout import HOST, Layout, StackError
from visionloop.stack.processes import start_time


@pytest.fixture
def project(tmp_path):
    """A project folder holding only params.yaml; its stack folder under tmp_path."""
    params = yaml.safe_load(REPO_PARAMS.read_text())
    ports = [free_port() for _ in range(3)]
    params["stack"].update(postgres_port=ports[0], mlflow_port=ports[1], prefect_port=ports[2])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def stack(project, *args: str) -> subprocess.CompletedProcess:
    return run_cli("stack", *args, cwd=project, timeout=120)


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def layout(project) -> Layout:
    return Layout.of(load_config(project / "params.yaml"))


def test_env_and_status_before_the_first_up(project):
    assert "run `visionloop stack up` first" in one_line_error(stack(project, "env"))
    status = stack(project, "status")
    assert status.returncode == 3
    assert [line.split()[:2] for line in status.stdout.splitlines()] == [
        ["postgres", "DOWN"],
        ["mlflow", "DOWN"],
        ["prefect", "DOWN"],
        ["worker", "DOWN"],
    ]


@pytest.mark.skipif(not postgres.installed(), reason="PostgreSQL 15 binaries missing")
def test_a_port_in_use_is_named_before_anything_starts(project):
    port = load_config(project / "params.yaml").stack.postgres_port
    with socket.socket() as squatter:
        squatter.bind((HOST, port))
        squatter.listen()
        line = one_line_error(stack(project, "up"))
    assert f"port {port} on {HOST} is already in use" in line and "stack.postgres_port" in line
    assert not (layout(project).pgdata / "PG_VERSION").exists()  # nothing was initialised


@pytest.mark.skipif(not postgres.installed(), reason="PostgreSQL 15 binaries missing")
def test_a_data_folder_from_another_postgresql_version_is_refused(project):
    pgdata = layout(project).pgdata
    pgdata.mkdir(parents=True)
    (pgdata / "PG_VERSION").write_text("14\n")
    line = one_line_error(stack(project, "up"))
    assert "holds a PostgreSQL 14 cluster" in line and "pg_upgrade" in line
    assert (pgdata / "PG_VERSION").read_text() == "14\n"  # left as it was


def test_stale_pid_files_are_reported_and_never_signalled(project):
    # a PID that is gone, and a PID now held by an unrelated live process
    gone = subprocess.Popen(["true"])
    gone.wait()
    bystander = subprocess.Popen(["sleep", "60"])
    try:
        pid_files = {"mlflow": gone.pid, "prefect": bystander.pid}
        for name, pid in pid_files.items():
            path = layout(project).pid_file(name)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"pid": pid, "start_time": (start_time(pid) or 0) + 1}))
        status = stack(project, "status")
        assert status.returncode == 3
        lines = {line.split()[0]: line for line in status.stdout.splitlines()}
        for name, pid in pid_files.items():
            assert "DOWN" in lines[name] and f"stale PID file: process {pid}" in lines[name]
            assert not layout(project).pid_file(name).exists()
        assert "stale PID file" not in stack(project, "status").stdout  # said once, then gone
        assert bystander.poll() is None  # nobody signalled the process that owns the PID now
        assert stack(project, "down").returncode == 0
        assert bystander.poll() is None
    finally:
        bystander.kill()


def test_a_secrets_file_readable_by_others_is_refused(project):
    secrets = layout(project).secrets
    secrets.parent.mkdir(parents=True)
    secrets.write_text(json.dumps({"postgres": "x"}))
    secrets.chmod(0o644)
    line = one_line_error(stack(project, "env"))
    assert "readable by other users (mode 644)" in line and f"chmod 600 {secrets}" in line


def test_postgresql_missing_says_how_to_install_it(project, monkeypatch):
    monkeypatch.setattr(postgres, "BIN", project / "no-such-postgresql")  # cannot uninstall it
    with pytest.raises(StackError, match="apt-get install postgresql"):
        control.up(load_config(project / "params.yaml"), print)


def test_a_folder_that_is_not_a_cluster_is_not_overwritten(project):
    if not postgres.installed():
        pytest.skip("PostgreSQL 15 binaries missing")
    pgdata = layout(project).pgdata
    pgdata.mkdir(parents=True)
    (pgdata / "notes.txt").write_text("mine")
    line = one_line_error(stack(project, "up"))
    assert "not empty but holds no PostgreSQL cluster" in line
    assert (pgdata / "notes.txt").read_text() == "mine"
    shutil.rmtree(layout(project).root)
