"""SIGKILL at seeded random moments of training, then the rerun resumes: its metrics equal
an uninterrupted run's, in the run that trained the bundle (issue 15)."""

from __future__ import annotations

import json

import pytest

from tests.faults.forking import attempt, run
from tests.faults.report import record
from tests.integration.test_train import write_params
from visionloop.artifacts import candidate
from visionloop.artifacts.bundle import bundle_digest
from visionloop.config import load_config

KILLS = 10
SETTINGS = {"epochs": 4, "batch_size": 8, "early_stopping": {"patience": 9}}
COMPARED = ("val_accuracy", "val_loss", "train_loss", "train_accuracy")


def project_config(tmp_path, name: str, cache):
    """A training project; all share one MLflow store (created once, by the reference)."""
    store = {"registry": {"tracking_uri": f"sqlite:///{tmp_path}/mlflow.db"}}
    return load_config(write_params(tmp_path / name, cache, **SETTINGS), overrides=store)


def train_action(config):
    from visionloop.training.engine import run as train_stage  # `stage train`: resume auto

    return lambda: train_stage(config)


def test_sigkill_at_random_moments_of_training_then_resume_equals_uninterrupted(
    tmp_path, cache, rng
):
    import time

    reference = project_config(tmp_path, "reference", cache)
    started = time.monotonic()
    expected = run(train_action(reference), tmp_path / "reference.json")
    duration = time.monotonic() - started

    config = project_config(tmp_path, "killed", cache)
    kills, attempts, outcome = 0, 0, "killed"
    while kills < KILLS:
        if outcome == "ok":  # finished: a fresh training for the next kills
            check_resumed(config, expected, tmp_path)
            config = project_config(tmp_path, f"killed-{attempts}", cache)
        delay = rng.uniform(0.05, 0.7 * duration)
        outcome = attempt(train_action(config), delay)
        attempts += 1
        print(f"attempt {attempts}: kill after {delay:.2f} s: {outcome}")
        assert outcome in ("killed", "ok"), "training failed (traceback above)"
        kills += outcome == "killed"
        assert attempts < 60, "no progress between kills"
    run(train_action(config), tmp_path / "last.json")  # the last rerun completes
    check_resumed(config, expected, tmp_path)
    record("faults", "SIGKILL during training, then resume", kills, kills)


def check_resumed(config, expected: dict, tmp_path) -> None:
    summary = json.loads((config.train.dir / "metrics.json").read_text())
    for key in ("epochs_run", "best_epoch", "stopped_early"):
        assert summary[key] == expected[key], key
    for key in COMPARED:
        assert summary[key] == pytest.approx(expected[key], rel=1e-6), key
    # The bundle names the run that trained it, and evaluate/register would log there.
    digest = bundle_digest(candidate.bundle_dir(config.train.dir))
    run_id = candidate.read_run_id(config.train.dir, digest)
    assert run_id is not None
