"""Tasks for the actions around the stages: taking drops in, the registry, the DVC remote."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from visionloop.data import versioning
from visionloop.monitoring import intake, log_drift
from visionloop.promotion import registry

_NOT_CACHED = {"cache_policy": NO_CACHE, "persist_result": False}

# Ingest is atomic and idempotent but reads local files only: a retry cannot help.
# It runs the monitoring checks (drift, label issues) on each drop before its commit.
ingest_drops = task(intake.ingest_with_checks, name="ingest", **_NOT_CACHED)
check_prediction_log = task(
    log_drift.check_prediction_log, name="prediction-log-drift", **_NOT_CACHED
)

# Registry and remote calls cross the network with a real server: worth a retry or two.
register_and_promote = task(
    registry.register_and_promote,
    name="register-and-promote",
    retries=2,
    retry_delay_seconds=10,
    **_NOT_CACHED,
)
push_data = task(versioning.push, name="dvc-push", retries=2, retry_delay_seconds=30, **_NOT_CACHED)
