"""A local `prefect server` for `visionloop flows serve` when no server is configured.

Prefect's temporary per-run server cannot hold schedules or triggers, so serving needs a
real one. Started as a child process on the loopback interface with the project's
PREFECT_HOME (SQLite), health-checked before use, and stopped when serving ends.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from visionloop.errors import VisionloopError

STARTUP_TIMEOUT_SECONDS = 120


@contextmanager
def local_prefect_server(port: int, log_file: Path) -> Iterator[str]:
    """Run `prefect server start` on 127.0.0.1:port for the block; yields its API URL."""
    api_url = f"http://127.0.0.1:{port}/api"
    if _healthy(api_url):
        raise VisionloopError(
            f"something already answers on {api_url}; set PREFECT_API_URL to use it, "
            "or choose another flows.server_port"
        )
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "prefect",
                "server",
                "start",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PREFECT_API_URL": api_url},
        )
        try:
            _wait_until_healthy(server, api_url, log_file)
            yield api_url
        finally:
            _stop(server)


def _healthy(api_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def _wait_until_healthy(server: subprocess.Popen, api_url: str, log_file: Path) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise VisionloopError(f"prefect server exited with {server.returncode}; see {log_file}")
        if _healthy(api_url):
            return
        time.sleep(0.5)
    raise VisionloopError(
        f"prefect server not healthy after {STARTUP_TIMEOUT_SECONDS} s; see {log_file}"
    )


def _stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
