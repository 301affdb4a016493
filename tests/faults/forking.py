"""Killing real processes at seeded random moments, cheaply: the test process imports the
heavy libraries once, then each attempt is a fork of it (no interpreter start-up per kill).

The parent never opens a database or starts threads of its own, so a forked child starts
from a clean state; everything that touches MLflow runs in a child.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _child(action: Callable[[], Any], result_file: Path | None) -> None:
    code = 0
    try:
        import torch

        torch.set_num_threads(1)  # the same arithmetic in every attempt
        result = action()
        if result_file is not None:
            result_file.write_text(json.dumps(result, default=str))
    except BaseException:
        traceback.print_exc(file=sys.stderr)
        code = 1
    finally:
        sys.stderr.flush()
        os._exit(code)


def attempt(action: Callable[[], Any], kill_after: float | None, result_file: Path | None = None):
    """Run `action` in a fork; SIGKILL it after `kill_after` seconds unless it ended first.
    'killed', or 'ok' / 'failed' by its exit status."""
    pid = os.fork()
    if pid == 0:
        _child(action, result_file)
    deadline = None if kill_after is None else time.monotonic() + kill_after
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:  # -9: killed at a named step, by itself (visionloop's test failpoints)
            code = os.waitstatus_to_exitcode(status)
            return {0: "ok", -signal.SIGKILL: "killed"}.get(code, "failed")
        if deadline is not None and time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "killed"
        time.sleep(0.005)


def run(action: Callable[[], Any], result_file: Path) -> Any:
    """`action` in a fork, to completion; what it returned (it must succeed)."""
    outcome = attempt(action, None, result_file)
    assert outcome == "ok", f"{action} failed (its traceback is above)"
    return json.loads(result_file.read_text())


def together(actions: list[Callable[[], Any]], folder: Path) -> list[Any]:
    """Start every action in its own fork at once; what each returned, in order."""
    pids = []
    for index, action in enumerate(actions):
        pid = os.fork()
        if pid == 0:
            _child(action, folder / f"together-{index}.json")
        pids.append(pid)
    for pid in pids:
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, "a concurrent action failed (above)"
    return [json.loads((folder / f"together-{i}.json").read_text()) for i in range(len(pids))]
