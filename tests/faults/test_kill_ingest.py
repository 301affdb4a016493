"""SIGKILL at seeded random points of ingest (named steps of the commit journal and random
moments), each followed by a rerun: the drop ends all in, as an uninterrupted run leaves it.

Invariants checked after every rerun: files in = accepted + duplicates + quarantined (the
ledger), the manifest and shards agree, no orphan folders (stage-, commit-, done-) or
temporary files, the same state as an uninterrupted ingest.
"""

from __future__ import annotations

import time

from tests.faults.forking import attempt
from tests.faults.report import record
from tests.integration.test_ingest_kill import POINTS, _assert_completed, _setup, _state
from visionloop.data.ingest import ingest_drops
from visionloop.data.ingest.commit import KILL_ENV

KILLS = 12
NAMED = [*POINTS, "renamed_done"]


def test_sigkill_at_random_points_of_ingest_then_rerun(tmp_path, rng, monkeypatch):
    reference_config = _setup(tmp_path / "reference")
    started = time.monotonic()
    ingest_drops(reference_config)
    duration = time.monotonic() - started
    reference = _state(reference_config)

    kills = 0
    for trial in range(KILLS):
        config = _setup(tmp_path / f"trial-{trial}")
        if rng.random() < 0.5:  # a named step of the journal
            point, delay = rng.choice(NAMED), 30.0
            monkeypatch.setenv(KILL_ENV, point)
        else:  # any moment of the run
            point, delay = "time", rng.uniform(0, duration)
            monkeypatch.delenv(KILL_ENV, raising=False)
        outcome = attempt(lambda config=config: ingest_drops(config), delay)
        monkeypatch.delenv(KILL_ENV, raising=False)
        print(f"trial {trial}: kill at {point} ({delay:.3f} s): {outcome}")
        assert outcome in ("killed", "ok"), outcome
        kills += outcome == "killed"
        ingest_drops(config)  # the rerun
        _assert_completed(config, reference)
    assert kills >= 10, f"only {kills} of {KILLS} attempts were killed before they ended"
    record("faults", "SIGKILL during ingest, then rerun", kills, kills)
