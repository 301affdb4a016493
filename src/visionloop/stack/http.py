"""The little HTTP the stack speaks to its servers: health checks and Prefect's REST API."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

from visionloop.stack.layout import StackError


class HttpError(StackError):
    def __init__(self, status: int, url: str, body: str) -> None:
        super().__init__(f"{url} answered HTTP {status}: {body[:200]}")
        self.status = status


def basic_auth(user_and_password: str) -> dict[str, str]:
    token = base64.b64encode(user_and_password.encode()).decode()
    return {"Authorization": f"Basic {token}"}


def request(
    url: str,
    payload: Any = None,
    *,
    method: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 10,
) -> Any:
    """JSON in, JSON out; HttpError on a non-2xx answer, OSError when nothing answers."""
    data = None if payload is None else json.dumps(payload).encode()
    wanted = {"Accept": "application/json", **(headers or {})}
    if data is not None:
        wanted["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, method=method, headers=wanted)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as response:
            body = response.read()
    except urllib.error.HTTPError as exc:
        raise HttpError(exc.code, url, exc.read().decode(errors="replace")) from None
    return json.loads(body) if body.strip() else None


def healthy(url: str, timeout: float = 3) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (OSError, ValueError):
        return False


def wait_until(check: Callable[[], bool], timeout: float, still_starting: Callable[[], bool]):
    """Poll `check` until it holds (True), the process gave up, or the time ran out (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return True
        if not still_starting():
            return False
        time.sleep(0.5)
    return check()
