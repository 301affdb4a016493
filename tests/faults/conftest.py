"""The fault suite (issue 15): faults a demanding user causes, each run checking invariants.

Every test here is marked slow. Randomness (kill points, corruption offsets) comes from one
seeded RNG per test: the seed is printed, and VISIONLOOP_FAULT_SEED replays a failing run.
"""

from __future__ import annotations

import os
import random

import pytest

from tests.integration.conftest import bundles  # noqa: F401  (fixtures shared with the gate)
from tests.integration.gate.conftest import project  # noqa: F401
from tests.integration.test_train import cache  # noqa: F401  (the tiny digits cache)


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/faults/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.slow)


@pytest.fixture
def rng(request) -> random.Random:
    """A seeded RNG; the seed is printed so a failing run can be replayed."""
    seed = int(os.environ.get("VISIONLOOP_FAULT_SEED", random.SystemRandom().randrange(2**32)))
    print(f"\n{request.node.name}: VISIONLOOP_FAULT_SEED={seed}")
    return random.Random(seed)


def pytest_terminal_summary(terminalreporter):
    from tests.faults.report import ROWS, table, write_if_asked

    if ROWS:
        terminalreporter.write_line("\nfault suite:")
        for line in table():
            terminalreporter.write_line(line)
        write_if_asked()
