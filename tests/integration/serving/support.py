"""Helpers of the serving tests: a real `visionloop serve` subprocess, encoded test images."""

from __future__ import annotations

import io
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tests.integration.gate.trained import test_split
from tests.project import pipeline_env

MODEL = "visionloop-classifier"


def encoded(
    image: np.ndarray,
    fmt: str = "PNG",
    size: tuple[int, int] | None = None,
    mode: str | None = None,
) -> bytes:
    """A test image as a file's bytes, optionally resized (Lanczos) and converted."""
    picture = Image.fromarray(image)
    if size is not None:
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    if mode is not None:
        picture = picture.convert(mode)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt)
    return buffer.getvalue()


def digit_images(count: int) -> tuple[np.ndarray, np.ndarray]:
    images, labels, _ = test_split()
    return images[:count], labels[:count]


# ---- a real `visionloop serve` -------------------------------------------------------------


class Server:
    """`visionloop serve --port 0` in a subprocess; its address is read from its first line."""

    def __init__(self, params: Path, *args: str, cwd: Path) -> None:
        env = dict(pipeline_env())
        env.pop("MLFLOW_TRACKING_URI", None)
        command = [sys.executable, "-m", "visionloop", "--params", str(params), "serve"]
        self.process = subprocess.Popen(
            [*command, "--port", "0", *args],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.url = self._wait_for_address(timeout=180)

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _wait_for_address(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines:
                if line.startswith("serving ") and " on http://" in line:
                    return line.split(" on ")[1].split(",")[0]
            if self.process.poll() is not None:
                raise AssertionError("server exited:\n" + self.log)
            time.sleep(0.1)
        raise AssertionError("server did not start:\n" + self.log)

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
        try:
            code = self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        self._reader.join(timeout=5)
        return code


def wait_for(condition, timeout: float = 30.0, every: float = 0.1):
    """Poll `condition()` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout} s")
