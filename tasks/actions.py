"""Tasks for the actions around the stages: taking drops in, the registry, the DVC remote."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from visionloop.data import versioning
from visionloop.data.ingest import run as ingest
from visionloop.promotion import registry

_NOT_CACHED = {"cache_policy": NO_CACHE, "persist_result": False}

# Ingest is atomic and idempotent but reads local files only: a retry cannot help.
ingest_drops = task(ingest.ingest_drops, name="ingest", **_NOT_CACHED)

# Registry and remote calls cross the network with a real server: worth a retry or two.
register_and_promote = task(
    registry.register_and_promote,
    name="register-and-promote",
    retries=2,
    retry_delay_seconds=10,
    **_NOT_CACHED,
)
push_data = task(versioning.push, name="dvc-push", retries=2, retry_delay_seconds=30, **_NOT_CACHED)
