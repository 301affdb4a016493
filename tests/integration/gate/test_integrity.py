"""Damaged registered models are never used: gate, promote and rollback check a version's
files against its recorded bundle_sha256 before loading it (issue 15)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.helpers import run_cli
from tests.integration.gate.test_gate_and_registry import (
    audit_file,
    champion_version,
    stored_weights,
)
from visionloop.artifacts.bundle import BundleDamaged
from visionloop.errors import VisionloopError
from visionloop.promotion.registry import promote, rollback


def zero_most(path: Path) -> None:
    """80% of the file zeroed (the issue's fault: torch.load still reads it)."""
    data = bytearray(path.read_bytes())
    cut = len(data) // 10
    data[cut : cut + len(data) * 8 // 10] = bytes(len(data) * 8 // 10)
    path.write_bytes(bytes(data))


def flip_one_bit(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def one_line_error(result) -> str:
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    return lines[0]


def test_rollback_skips_a_damaged_champion_for_the_previous_good_one(project):
    project.release("weak")  # v1
    project.release("equal")  # v2: not worse, passes (min_gain 0)
    project.release("good")  # v3
    assert champion_version(project.config) == "3"
    zero_most(stored_weights(project.config, "2"))

    outcome = rollback(project.config, "v3 misroutes")
    assert outcome["to_version"] == "1" and outcome["skipped"] == ["2"]
    assert champion_version(project.config) == "1"
    last = audit_file(project.config)[-1]
    assert (last["from_version"], last["to_version"]) == ("3", "1")
    assert "skipped damaged v2" in last["reason"]
    with pytest.raises(VisionloopError, match="first champion"):
        rollback(project.config)  # the history knows v2 was passed over


@pytest.mark.slow
def test_damaged_versions_are_refused_in_one_line_by_rollback_promote_gate_and_mlflow(project):
    import mlflow.pyfunc

    project.release("weak")
    project.release("good")
    params = str(project.params_file())
    zero_most(stored_weights(project.config, "1"))
    line = one_line_error(run_cli("--params", params, "rollback"))
    assert "v1" in line and "hash to" in line
    assert champion_version(project.config) == "2"
    assert audit_file(project.config)[-1]["to_version"] == "2"  # nothing moved
    with pytest.raises(BundleDamaged, match="v1"):
        promote(project.config, "1", "back to the old one")
    # Anyone loading the version with MLflow alone is refused as well (model_config digest).
    with pytest.raises(Exception, match="hash to"):
        mlflow.pyfunc.load_model(f"models:/{project.config.registry.model_name}/1")

    # The gate never compares a candidate against a damaged champion (bit flip, truncation):
    # damaged in the registry, and on this machine either not copied yet or damaged too.
    project.use_candidate("equal")
    weights = stored_weights(project.config, "2")
    intact = weights.read_bytes()
    for damage, here in ((truncate, "damaged copy"), (flip_one_bit, "no copy")):
        damage(weights)
        if here == "no copy":
            shutil.rmtree(project.config.registry.cache_folder)
        else:
            (local,) = project.config.registry.cache_folder.glob("*-v2-*/artifacts/*/weights.pt")
            damage(local)
        line = one_line_error(run_cli("--params", params, "stage", "gate"))
        assert "champion is damaged" in line and "rollback" in line, here
        weights.write_bytes(intact)
