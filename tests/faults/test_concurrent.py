"""Concurrent triggers (a schedule, a new drop and a person at once): ingest and registry
changes run one at a time; the other is skipped with one line and nothing is done twice."""

from __future__ import annotations

from tests.faults.forking import run, together
from tests.faults.report import record
from tests.faults.test_kill_registry import invariants
from tests.integration.test_ingest_kill import _assert_completed, _setup, _state


def skipped_if_busy(action):
    """`action`, or the one line it was skipped with when another run held the lock."""

    def guarded():
        from visionloop.locking import AlreadyRunning

        try:
            action()
            return "done"
        except AlreadyRunning as exc:
            assert "\n" not in str(exc) and "another" in str(exc)
            return "skipped"

    return guarded


def test_concurrent_ingests_commit_each_drop_once(tmp_path):
    from visionloop.data.ingest import ingest_drops

    reference = _setup(tmp_path / "reference")
    ingest_drops(reference)
    config = _setup(tmp_path / "concurrent")
    outcomes = together([skipped_if_busy(lambda: ingest_drops(config))] * 3, tmp_path)
    assert "done" in outcomes, outcomes
    ingest_drops(config)  # what the skipped trigger's next run does: nothing left
    _assert_completed(config, _state(reference))
    record("faults", "concurrent ingest triggers", len(outcomes), len(outcomes))


def gate_action(project, release: bool):
    def action():
        from visionloop.promotion.gate import run as gate
        from visionloop.promotion.registry import register_and_promote

        verdict = gate(project.config)
        return register_and_promote(project.config) if release else verdict

    return action


def test_concurrent_registrations_register_the_bundle_once(project, tmp_path):
    project.use_candidate("weak")
    run(gate_action(project, release=True), tmp_path / "first.json")
    project.use_candidate("good")
    run(gate_action(project, release=False), tmp_path / "gate.json")

    def register():
        from visionloop.promotion.registry import register_and_promote

        register_and_promote(project.config)

    outcomes = together([skipped_if_busy(register)] * 3, tmp_path)
    assert "done" in outcomes, outcomes
    state = run(invariants(project, smoke=True), tmp_path / "state.json")
    assert state["champion"] == "2" and state["versions"] == 2, state
    record("faults", "concurrent register triggers", len(outcomes), len(outcomes))
