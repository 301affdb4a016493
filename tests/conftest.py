"""Shared test setup: offline defaults before any tool is imported."""

from __future__ import annotations

import tempfile
from pathlib import Path

from visionloop.env import apply_offline_defaults

# Prefect reads PREFECT_HOME when it is imported; keep its database out of the user's home.
apply_offline_defaults(prefect_home=Path(tempfile.mkdtemp(prefix="visionloop-prefect-")))
