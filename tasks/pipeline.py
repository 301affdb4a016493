"""Tasks for the pipeline stages and the actions around them."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from visionloop.pipeline import reproduce

_NOT_CACHED = {"cache_policy": NO_CACHE, "persist_result": False}

# A stage is deterministic given its inputs: retrying it would only repeat the failure.
reproduce_stage = task(
    reproduce.reproduce_stage, name="stage", task_run_name="{name}", retries=0, **_NOT_CACHED
)
