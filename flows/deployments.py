"""The deployments `visionloop flows serve` runs, built from params.

- `retrain/nightly`: the cron schedule from `flows.retrain_cron`;
- `retrain/on-drop`: started by the `visionloop.drop.complete` event;
- `watch-drops/watcher`: looks at the incoming folder every `flows.watch_interval_seconds`.

Both retrain deployments allow one run at a time and queue the rest (the library's lock
also skips a second run started any other way).
"""

from __future__ import annotations

from pathlib import Path

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.schedules import Cron

from flows.retrain import DROP_COMPLETE_EVENT, retrain, watch_drops
from visionloop.config import Config

ONE_AT_A_TIME = ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE)


def build_deployments(config: Config, params_path: Path) -> list:
    parameters = {"params": str(params_path.resolve())}
    nightly = retrain.to_deployment(
        name="nightly",
        schedule=Cron(config.flows.retrain_cron, timezone=config.flows.timezone),
        parameters=parameters,
        concurrency_limit=ONE_AT_A_TIME,
        description="Retrain on every complete drop not yet ingested, on a schedule.",
    )
    on_drop = retrain.to_deployment(
        name="on-drop",
        triggers=[DeploymentEventTrigger(expect={DROP_COMPLETE_EVENT})],
        parameters=parameters,
        concurrency_limit=ONE_AT_A_TIME,
        description="Retrain as soon as a complete drop lands in the incoming folder.",
    )
    watcher = watch_drops.to_deployment(
        name="watcher",
        interval=config.flows.watch_interval_seconds,
        parameters=parameters,
        description="Announce each complete drop once with a visionloop.drop.complete event.",
    )
    return [nightly, on_drop, watcher]
