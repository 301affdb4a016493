"""The stack's server processes: started detached, found again by a PID file, stopped whole.

A PID file records the PID and the process's start time (from /proc), so a PID that the
system has since given to an unrelated process reads as stale and is never signalled. Each
server runs in its own session: a Ctrl-C in the terminal that ran `stack up` does not reach
it, and stopping signals its whole process group (uvicorn workers, flow-run processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from visionloop.atomic import write_json_atomic
from visionloop.stack.layout import HOST


@dataclass(frozen=True)
class ProcessState:
    pid: int | None  # the live process, or None
    note: str = ""  # why it is not running, when that is worth saying (a stale PID file)

    @property
    def running(self) -> bool:
        return self.pid is not None


def start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot; None when it is gone (or a zombie)."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat_line.rsplit(")", 1)[1].split()  # the command name may hold spaces
    if fields[0] == "Z":
        return None
    return int(fields[19])


def spawn(argv: list[str], *, env: dict[str, str], cwd: Path, pid_file: Path, log_file: Path):
    """Start argv in its own session, output appended to log_file; record it in pid_file."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        process = subprocess.Popen(
            argv,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    write_json_atomic(
        pid_file, {"pid": process.pid, "start_time": start_time(process.pid), "argv": argv[:4]}
    )
    return process


def state(pid_file: Path) -> ProcessState:
    """Running (its PID) or not; a PID file whose process is gone is removed, and said so."""
    try:
        record = json.loads(pid_file.read_text())
        pid, started = int(record["pid"]), record["start_time"]
    except FileNotFoundError:
        return ProcessState(None)
    except (OSError, ValueError, KeyError, TypeError):
        pid_file.unlink(missing_ok=True)
        return ProcessState(None, f"removed an unreadable PID file {pid_file.name}")
    if start_time(pid) is not None and start_time(pid) == started:
        return ProcessState(pid)
    pid_file.unlink(missing_ok=True)
    return ProcessState(None, f"stale PID file: process {pid} had exited; removed it")


def stop(pid_file: Path, timeout: float) -> bool:
    """SIGTERM to the process group, SIGKILL after `timeout` s; False when nothing ran."""
    current = state(pid_file)
    if current.pid is None:
        return False
    _signal_group(current.pid, signal.SIGTERM)
    if not wait_gone(current.pid, timeout):
        _signal_group(current.pid, signal.SIGKILL)
        wait_gone(current.pid, 10)
    pid_file.unlink(missing_ok=True)
    return True


def _signal_group(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signum)  # the session leader's PID is its group's id


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if start_time(pid) is None:
            return True
        time.sleep(0.2)
    return start_time(pid) is None


def listening(port: int) -> bool:
    """Something accepts connections on 127.0.0.1:port."""
    try:
        with socket.create_connection((HOST, port), timeout=1):
            return True
    except OSError:
        return False


def log_tail(log_file: Path, lines: int = 1) -> str:
    """The last non-empty line(s) of a log, for an error message that points at it."""
    try:
        text = log_file.read_text(errors="replace")
    except OSError:
        return ""
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:])
