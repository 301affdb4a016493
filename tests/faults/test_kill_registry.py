"""SIGKILL at seeded random moments of gate + register + promote and of rollback, each
followed by the rerun a user would do: the registry converges, and after every step
@champion is a gate=passed version whose files are intact and which answers sanely."""

from __future__ import annotations

import time

from tests.faults.forking import attempt, run
from tests.faults.report import record

# A release: the candidate gated, registered and promoted; rollback: back one champion.
OPS = ["weak", "equal", "good", "rollback", "shuffled", "good", "rollback", "good"]
OPS += ["rollback", "good"]
KILLS = 10


def release(project, name: str):
    def action():
        from visionloop.promotion.gate import run as gate
        from visionloop.promotion.registry import register_and_promote

        project.use_candidate(name)
        gate(project.config)
        return register_and_promote(project.config)

    return action


def converge_rollback(project, entries_before: int):
    """The user's rerun after a killed rollback: roll back unless the killed one got as far
    as its journal entry (then the next registry action finishes its move)."""

    def action():
        from visionloop.promotion.registry import (
            audit_entries,
            finish_interrupted_moves,
            registry_client,
            rollback,
        )

        client = registry_client(project.config)
        finish_interrupted_moves(client, project.config)
        newer = audit_entries(client, project.config.registry.model_name)[entries_before:]
        if not any(e["action"] == "rollback" for e in newer):
            return rollback(project.config, "rerun")
        return {"action": "finished"}

    return action


def invariants(project, smoke: bool):
    """What must hold after every step; the number of audit entries (for the next step).
    Each step checks the champion's files against its bundle_sha256; the last also loads
    it as MLflow users do and sends it images."""

    def action():
        from visionloop.promotion.pyfunc import download_checked
        from visionloop.promotion.registry import (
            CHAMPION,
            DIGEST_TAG,
            alias_version,
            all_versions,
            audit_entries,
            champion_history,
            registry_client,
            smoke_test,
            version_of,
        )
        from visionloop.promotion.version_cache import hidden_folders

        config = project.config
        client = registry_client(config)
        name = config.registry.model_name
        versions = all_versions(client, name)
        digests = [mv.tags.get(DIGEST_TAG) for mv in versions]
        assert len(set(digests)) == len(digests), "one bundle registered twice"
        assert all(mv.tags.get("gate") != "pending" for mv in versions), "left pending"
        champion = alias_version(client, name, CHAMPION)
        entries = len(audit_entries(client, name))
        if champion is None:
            return {"champion": None, "entries": entries}
        version = version_of(champion)
        assert champion.tags.get("gate") == "passed", champion.tags
        assert champion_history(client, name)[-1] == version, "audit diverged"
        # Intact where the registry keeps it (fresh: not only this machine's copy).
        download_checked(config.registry, name, version, champion.tags.get(DIGEST_TAG), True)
        cache = config.registry.cache_folder
        assert not hidden_folders(cache), "a killed download's staging folder was left behind"
        if smoke:
            smoke_test(config, version)  # loads as MLflow users do, answers sanely
        return {"champion": version, "versions": len(versions), "entries": entries}

    return action


def test_sigkill_at_random_moments_of_register_promote_rollback(project, rng, tmp_path):
    estimate, kills, before = 4.0, 0, 0
    step = 0
    while kills < KILLS:
        op = OPS[step % len(OPS)]
        action = release(project, op) if op != "rollback" else None
        delay = rng.uniform(0.2, estimate)
        outcome = attempt(action or converge_rollback(project, before), delay)
        assert outcome in ("killed", "ok"), f"{op} failed (traceback above)"
        kills += outcome == "killed"
        started = time.monotonic()
        if outcome == "killed":  # the rerun
            rerun = action or converge_rollback(project, before)
            run(rerun, tmp_path / "rerun.json")
            estimate = max(1.0, min(estimate, time.monotonic() - started))
        last = kills >= KILLS
        state = run(invariants(project, smoke=last), tmp_path / "state.json")
        before = state["entries"]
        print(f"step {step}: {op} killed after {delay:.2f} s: {outcome}; then {state}")
        step += 1
        assert step < 2 * KILLS, "the kills keep missing: the estimate is off"
    record("faults", "SIGKILL during gate/register/promote/rollback, then rerun", kills, kills)
