"""The Prefect server the flows talk to: a check of the configured one, or a local one.

- `check_api`: with PREFECT_API_URL set (`visionloop stack`, a shared server), one line when
  it does not answer or refuses PREFECT_API_AUTH_STRING, before any flow starts.
- `local_prefect_server`: `python -m flows serve` with no server configured. Prefect's
  temporary per-run server cannot hold schedules or triggers, so serving needs a real one:
  started as a child process on the loopback interface with the project's PREFECT_HOME
  (SQLite), health-checked before use, and stopped when serving ends.
"""

from __future__ import annotations

import base64
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
CHECK_TIMEOUT_SECONDS = 5
STACK_HINT = 'for `visionloop stack`: eval "$(visionloop stack env)"'


def check_api(api_url: str) -> None:
    """An authenticated request the server must answer, or one line saying what is wrong."""
    headers = {}
    if auth := os.environ.get("PREFECT_API_AUTH_STRING"):
        headers["Authorization"] = "Basic " + base64.b64encode(auth.encode()).decode()
    request = urllib.request.Request(f"{api_url.rstrip('/')}/admin/version", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=CHECK_TIMEOUT_SECONDS):
            return
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            raise VisionloopError(
                f"the Prefect API {api_url} refused the request (HTTP {exc.code}): set "
                f"PREFECT_API_AUTH_STRING to its user:password ({STACK_HINT})"
            ) from None
        raise VisionloopError(f"the Prefect API {api_url} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise VisionloopError(
            f"the Prefect API {api_url} does not answer ({reason}): start it (`visionloop "
            "stack up`), or unset PREFECT_API_URL to run on a temporary local server"
        ) from None


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
            # Its own session: a Ctrl-C in the terminal reaches only `serve`, which then
            # pauses its deployments on this server before stopping it.
            start_new_session=True,
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
