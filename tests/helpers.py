"""Helpers shared by tests: the repo's params and the real CLI in a subprocess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
REPO_PARAMS = REPO_ROOT / "params.yaml"


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 600):
    """Run the real `visionloop` entry point in a subprocess, the way a user would."""
    return subprocess.run(
        [sys.executable, "-m", "visionloop", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
