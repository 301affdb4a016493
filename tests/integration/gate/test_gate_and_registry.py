"""The gate against a real MLflow registry (SQLite in tmp_path) with real trained models."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tests.helpers import run_cli
from tests.integration.gate.trained import CLASSES
from visionloop.artifacts.prepared import open_prepared_split
from visionloop.artifacts.verdict import read_verdict
from visionloop.errors import VisionloopError
from visionloop.models.classifier import load_bundle
from visionloop.promotion.pyfunc import output_probabilities
from visionloop.promotion.registry import (
    CHALLENGER,
    CHAMPION,
    alias_version,
    audit_entries,
    promote,
    registry_client,
    rollback,
    version_of,
)


def champion_version(config) -> str | None:
    return version_of(alias_version(registry_client(config), config.registry.model_name, CHAMPION))


def version_tags(config, version: str) -> dict[str, str]:
    client = registry_client(config)
    return client.get_model_version(config.registry.model_name, version).tags


def audit_file(config) -> list[dict]:
    path = config.registry.dir / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def failed_rules(verdict: dict) -> set[str]:
    return {name for name, rule in verdict["rules"].items() if not rule["passed"]}


def test_first_model_rule_judges_floors_only(project):
    verdict, outcome = project.release("shuffled")
    stored = read_verdict(project.config.gate.dir)
    assert stored["mode"] == "first_model" and "first-model rule" in stored["summary"]
    assert set(stored["rules"]) == {"top1_floor", "class_recall_floor"}
    assert not verdict["passed"] and outcome["action"] == "rejected"
    assert champion_version(project.config) is None
    assert version_tags(project.config, "1")["gate"] == "failed"

    verdict, outcome = project.release("weak")
    assert verdict["passed"] and verdict["mode"] == "first_model"
    assert outcome == {"action": "promoted", "version": "2", "summary": verdict["summary"]} | {
        "abandoned": []
    }
    assert champion_version(project.config) == "2"
    tags = version_tags(project.config, "2")
    assert tags["gate"] == "passed" and tags["gate.rule.top1_floor"].startswith("pass")
    assert float(tags["gate.rule.top1_floor"].split()[1]) > 0.5
    assert (project.config.gate.dir / "verdict.md").read_text().startswith("# Gate verdict: passed")


def test_label_shuffled_model_is_rejected_and_the_champion_stays(project):
    project.release("weak")
    verdict, outcome = project.release("shuffled")
    stored = read_verdict(project.config.gate.dir)
    assert not verdict["passed"] and outcome["action"] == "rejected"
    assert {"top1_floor", "gain_vs_champion", "mcnemar_not_worse", "bootstrap_not_worse"} <= (
        failed_rules(stored)
    )
    assert (
        stored["champion"]["version"] == "1" and stored["statistics"]["mcnemar"]["p_worse"] < 1e-6
    )
    assert champion_version(project.config) == "1"
    assert version_tags(project.config, "2")["gate"] == "failed"
    # The rejected version is still the latest challenger: registered, never champion.
    client = registry_client(project.config)
    assert version_of(alias_version(client, project.config.registry.model_name, CHALLENGER)) == "2"


def test_clearly_better_model_passes_and_the_champion_loads_by_alias(project):
    project.release("weak")
    verdict, outcome = project.release("good")
    stored = read_verdict(project.config.gate.dir)
    assert verdict["passed"] and outcome["action"] == "promoted", stored["summary"]
    assert stored["statistics"]["mcnemar"]["p_better"] < 1e-6
    assert stored["statistics"]["bootstrap"]["low"] > 0.1
    assert champion_version(project.config) == "2"
    moves = [e for e in audit_file(project.config) if e["alias"] == CHAMPION]
    assert [(e["from_version"], e["to_version"]) for e in moves] == [(None, "1"), ("1", "2")]
    assert moves[-1]["report"].endswith("visionloop-classifier-v2.md")

    import mlflow.pyfunc

    model = mlflow.pyfunc.load_model(f"models:/{project.config.registry.model_name}@champion")
    test = open_prepared_split(project.config.prepare.dir, "test")
    images = np.array(test.images[:6])
    expected = load_bundle(project.bundles["good"]).predict_proba(images)
    encoded = pd.DataFrame({"image": [png_bytes(image) for image in images]})
    from_bytes = model.predict(encoded)
    assert list(from_bytes.columns) == ["label", "confidence", "top_k", "probabilities"]
    assert list(from_bytes["probabilities"][0]) == list(CLASSES)
    assert np.allclose(output_probabilities(from_bytes), expected, atol=1e-5)
    assert list(from_bytes["label"]) == [CLASSES[i] for i in expected.argmax(1)]
    # uint8 arrays go to the unwrapped model (the signature takes encoded images).
    unwrapped = model.unwrap_python_model()
    assert np.allclose(output_probabilities(unwrapped.predict(None, images)), expected, atol=1e-5)
    small = np.array([np.asarray(Image.fromarray(i).resize((8, 8))) for i in images])
    assert len(unwrapped.predict(None, small)) == 6  # other sizes are resized to the bundle's


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def test_equal_model_is_not_promoted_when_a_gain_is_required(project):
    project.release("weak")
    strict = project.with_gate(min_gain=0.02)
    _, outcome = project.release("equal", strict)
    stored = read_verdict(strict.gate.dir)
    assert stored["candidate"]["top1"] == stored["champion"]["top1"]
    assert stored["statistics"]["mcnemar"]["candidate_only_correct"] == 0
    assert failed_rules(stored) == {"gain_vs_champion", "mcnemar_better", "bootstrap_better"}
    assert outcome["action"] == "rejected" and champion_version(strict) == "1"

    # The same model passes when no gain is required: the gain rule is what stopped it.
    from visionloop.promotion.gate import run as gate

    assert gate(project.with_gate(min_gain=0.0))["passed"]


CRASH_AFTER_REGISTER = """
import os, signal, sys
from visionloop.config import load_config
from visionloop.promotion.registry import register_candidate
print(register_candidate(load_config(sys.argv[1])), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # dies before promote_if_passed
"""


def test_crash_between_register_and_promote_is_reconciled(project):
    from visionloop.promotion.gate import run as gate
    from visionloop.promotion.registry import register_and_promote

    project.release("weak")
    project.use_candidate("good")
    assert gate(project.config)["passed"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    crashed = subprocess.run(
        [sys.executable, "-c", CRASH_AFTER_REGISTER, str(project.params_file())],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert crashed.returncode == -9, crashed.stderr[-2000:]
    assert crashed.stdout.strip() == "2"
    assert champion_version(project.config) == "1"
    assert version_tags(project.config, "2")["gate"] == "pending"

    outcome = register_and_promote(project.config)  # the next run
    assert outcome["action"] == "promoted" and outcome["version"] == "2"
    assert champion_version(project.config) == "2"
    assert version_tags(project.config, "2")["gate"] == "passed"
    client = registry_client(project.config)
    versions = client.search_model_versions(f"name='{project.config.registry.model_name}'")
    assert len(versions) == 2  # the crashed registration was reused, not duplicated


def test_pending_version_of_a_replaced_candidate_is_abandoned(project):
    from visionloop.promotion.registry import register_candidate

    project.use_candidate("shuffled")
    assert register_candidate(project.config) == "1"  # then "crashed": never gated
    _, outcome = project.release("weak")
    assert outcome["abandoned"] == ["1"] and outcome["version"] == "2"
    assert version_tags(project.config, "1")["gate"] == "abandoned"
    assert champion_version(project.config) == "2"


def test_rollback_restores_the_previous_champion_and_audits_it(project):
    project.release("weak")
    project.release("good")
    project.release("shuffled")  # v3, failed
    params = project.params_file()

    listing = run_cli("--params", str(params), "models")
    assert listing.returncode == 0, listing.stderr
    lines = listing.stdout.splitlines()
    assert lines[0].startswith("v1") and "gate=passed" in lines[0]
    assert lines[1].startswith("v2") and "champion" in lines[1]
    assert lines[2].startswith("v3") and "challenger" in lines[2] and "gate=failed" in lines[2]

    # A previous champion that no longer loads is never rolled back to.
    weights = stored_weights(project.config, "1")
    saved = weights.read_bytes()
    weights.unlink()
    with pytest.raises(VisionloopError, match="v1"):
        rollback(project.config, "try")
    assert champion_version(project.config) == "2"
    assert audit_file(project.config)[-1]["action"] == "register"  # no move, no entry
    weights.write_bytes(saved)

    rolled = run_cli("--params", str(params), "rollback", "--reason", "v2 misroutes 7s")
    assert rolled.returncode == 0, rolled.stderr
    assert champion_version(project.config) == "1"
    last = audit_file(project.config)[-1]
    assert last["action"] == "rollback" and last["reason"] == "v2 misroutes 7s"
    assert (last["from_version"], last["to_version"]) == ("2", "1")
    client = registry_client(project.config)
    assert audit_entries(client, project.config.registry.model_name)[-1] == last

    with pytest.raises(VisionloopError, match="first champion"):
        rollback(project.config)

    with pytest.raises(VisionloopError, match="gate=failed"):
        promote(project.config, "3", "try the failed one")
    promote(project.config, "2", "fixed upstream")
    assert champion_version(project.config) == "2"
    assert audit_file(project.config)[-1]["action"] == "manual_promote"


def test_a_former_champion_judged_again_keeps_the_gate_it_passed(project):
    project.release("weak")  # v1, champion
    project.release("good")  # v2, champion
    passed_summary = version_tags(project.config, "1")["gate.summary"]

    # The same bundle as v1 again (a retrain that reproduced it): beaten by v2, rejected,
    # but v1 stays a version that passed its gate, so rollback lands on a passed version.
    _, outcome = project.release("weak")
    assert outcome["action"] == "rejected" and outcome["version"] == "1"
    assert "keeps the gate it passed before" in outcome["summary"]
    tags = version_tags(project.config, "1")
    assert tags["gate"] == "passed" and tags["gate.summary"] == passed_summary
    assert champion_version(project.config) == "2"

    rollback(project.config, "v2 misroutes 7s")
    assert champion_version(project.config) == "1"
    assert version_tags(project.config, "1")["gate"] == "passed"


def stored_weights(config, version: str) -> Path:
    """Where the registry keeps a version's weights (to break one for real)."""
    from urllib.parse import urlparse

    import mlflow

    client = registry_client(config)
    source = client.get_model_version(config.registry.model_name, version).source
    model_id = source.removeprefix("models:/")
    location = urlparse(mlflow.get_logged_model(model_id).artifact_location).path
    (weights,) = Path(location).glob("artifacts/*/weights.pt")
    return weights


def test_register_rerun_after_a_completed_or_interrupted_promotion_converges(project, monkeypatch):
    """Issue 15: a rerun failed with `the gate judged against champion 1 but the champion
    is now 2`."""
    from visionloop.promotion import registry

    project.release("weak")
    project.release("equal")  # v2: not worse than v1 (min_gain 0)
    moves = len(audit_file(project.config))
    again = registry.register_and_promote(project.config)  # the rerun
    assert again["action"] == "promoted" and again["version"] == "2"
    assert champion_version(project.config) == "2" and len(audit_file(project.config)) == moves

    # Killed after the audit entry (the move's journal), before the alias moved: the rerun
    # finishes the move, and the history holds it once.
    project.use_candidate("good")
    from visionloop.promotion.gate import run as gate

    assert gate(project.config)["passed"]
    client_class = type(registry.registry_client(project.config))
    set_alias = client_class.set_registered_model_alias

    def killed(self, name, alias, version):
        if alias == CHAMPION:
            raise SystemExit("killed")
        set_alias(self, name, alias, version)

    monkeypatch.setattr(client_class, "set_registered_model_alias", killed)
    with pytest.raises(SystemExit):
        registry.register_and_promote(project.config)
    monkeypatch.undo()
    assert champion_version(project.config) == "2"
    outcome = registry.register_and_promote(project.config)
    assert outcome["action"] == "promoted" and outcome["version"] == "3"
    assert champion_version(project.config) == "3"
    moves = [e for e in audit_file(project.config) if e["alias"] == CHAMPION]
    assert [e["to_version"] for e in moves] == ["1", "2", "3"]
    assert rollback(project.config)["to_version"] == "2"  # the history is whole
