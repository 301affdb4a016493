"""Fixtures shared by the integration tests of several phases."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.integration.gate.trained import train_bundles


@pytest.fixture(scope="session")
def bundles(tmp_path_factory) -> dict[str, Path]:
    """Small real models (simple_cnn on digits), trained once per session: weak, good,
    equal, shuffled (tests/integration/gate/trained.py)."""
    return train_bundles(tmp_path_factory.mktemp("bundles"))
