"""A tracking server that is down or never answers: every tracking and registry command
ends in seconds with one line naming the URI (issue 15: 250 s of silence, 145 lines)."""

from __future__ import annotations

import os
import socket
import time

from tests.faults.report import record
from tests.helpers import run_cli

COMMANDS = (["models"], ["stage", "gate"], ["models", "register"], ["rollback"])


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_a_down_or_silent_tracking_server_fails_fast_in_one_line(project):
    project.use_candidate("good")
    params = str(project.params_file())
    silent = socket.socket()  # accepts connections (the backlog) and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    servers = {
        "down": f"http://127.0.0.1:{closed_port()}",
        "silent": f"http://127.0.0.1:{silent.getsockname()[1]}",
    }
    tried = 0
    try:
        for kind, uri in servers.items():
            for command in COMMANDS if kind == "down" else COMMANDS[:2]:
                env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
                started = time.monotonic()
                result = run_cli("--params", params, *command, env=env, timeout=120)
                took = time.monotonic() - started
                lines = result.stderr.strip().splitlines()
                assert result.returncode != 0, (command, result.stdout)
                assert len(lines) == 1 and uri in lines[0] and "Traceback" not in result.stderr
                assert "does not answer" in lines[0], lines
                assert took < 60, f"{command} against a {kind} server took {took:.0f} s"
                tried += 1
    finally:
        silent.close()
    record("faults", "unreachable tracking server (down, silent)", tried, tried)
