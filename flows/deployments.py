"""The deployments `python -m flows serve` runs, built from params (prefect.yaml holds the
same four for a work pool):

- `retrain/nightly`: the cron schedule from `flows.retrain_cron`;
- `retrain/on-drop`: started by the `visionloop.drop.complete` event;
- `monitor/prediction-log`: prediction-log drift on the cron schedule `flows.monitor_cron`;
- `watch-drops/watcher`: one long-lived run (tagged always-on) that looks at the incoming
  folder every `flows.watch_interval_seconds`; serving, or `visionloop stack up` for a
  worker, starts it when no run of it is active.

Both retrain deployments allow one run at a time and queue the rest (the library's lock
also skips a second run started any other way).
"""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitConfig,
    ConcurrencyLimitStrategy,
    StateType,
)
from prefect.events.schemas.deployment_triggers import DeploymentEventTrigger
from prefect.exceptions import TerminationSignal
from prefect.schedules import Cron
from prefect.states import Crashed

from flows.retrain import DROP_COMPLETE_EVENT, monitor, retrain, watch_drops
from visionloop.config import Config
from visionloop.stack.control import ALWAYS_ON_TAG as ALWAYS_ON

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
        parameters={**parameters, "poll_seconds": config.flows.watch_interval_seconds},
        tags=[ALWAYS_ON],
        description="One long-lived run: announce each complete drop once with a "
        f"{DROP_COMPLETE_EVENT} event.",
    )
    drift = monitor.to_deployment(
        name="prediction-log",
        schedule=Cron(config.flows.monitor_cron, timezone=config.flows.timezone),
        parameters=parameters,
        concurrency_limit=ONE_AT_A_TIME,
        description="Drift of the prediction log against the champion's training images; "
        "a visionloop.drift.detected event on warn or alert.",
    )
    return [nightly, on_drop, watcher, drift]


def serve_deployments(deployments: list) -> None:
    """Prefect's `serve`, plus a fresh run of each always-on deployment; returns on Ctrl-C
    or SIGTERM once the runner has cancelled its runs and paused the schedules."""
    from prefect.runner import Runner

    runner = Runner(pause_on_shutdown=True)
    ids = {deployment.name: runner.add_deployment(deployment) for deployment in deployments}
    for deployment in deployments:
        if ALWAYS_ON in (deployment.tags or []):
            _restart_always_on(ids[deployment.name])
    print(f"serving {', '.join(sorted(ids))} until Ctrl-C", flush=True)
    # A Ctrl-C in the terminal goes to the whole process group; flow runs started from here
    # would each die of it with a traceback. Blocked in this thread, SIGINT is blocked in
    # the flow-run processes it starts too, while Python still handles it here (a thread
    # that does not block it takes delivery): the runner then cancels its runs itself.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        asyncio.run(_serve_until_stopped(runner))
    except (KeyboardInterrupt, TerminationSignal):
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    _flush_logs_and_events()


async def _serve_until_stopped(runner) -> None:
    """The runner until Ctrl-C or SIGTERM; both take the runner's own stop (cancel its runs
    with a grace period, then pause the deployments)."""
    # A loop signal handler, not asyncio.run's Ctrl-C handling, for two reasons. Delivered
    # to another thread (it is blocked in this one), SIGINT only set a flag, and the loop,
    # asleep in epoll until its next timer (the runner polls every 10 s), saw it up to 10 s
    # late; a loop handler also writes to the loop's wake-up pipe, from any thread. And
    # asyncio.run's Ctrl-C cancelled the runner's task, whose clean-up terminated the
    # watcher's process and waited for it with no time limit.
    asyncio.get_running_loop().add_signal_handler(signal.SIGINT, _stop, runner)
    await runner.start()


def _stop(runner) -> None:
    if runner.stopping or not runner.started:
        raise KeyboardInterrupt  # a second Ctrl-C, or one before the runner has started
    runner.stopping = True
    runner.execute_in_background(runner.astop)


def _restart_always_on(deployment_id) -> None:
    """Only this serving process runs these deployments, so a run still marked Running is
    left over from one that was killed: mark it Crashed; then make sure one run is due."""
    with get_client(sync_client=True) as client:
        for run in _runs(client, deployment_id, StateType.PENDING, StateType.RUNNING):
            client.set_flow_run_state(run.id, Crashed(message="its serving process stopped"))
        if not _runs(client, deployment_id, StateType.SCHEDULED):
            client.create_flow_run_from_deployment(deployment_id)


def _runs(client, deployment_id, *states: StateType) -> list:
    return client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states)))
        ),
    )


def _flush_logs_and_events() -> None:
    """Send what Prefect still holds while its server is up: left for the interpreter's exit,
    it would be retried against a server that `serve` has already stopped."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for service in (APILogWorker, EventsWorker):
        service.drain_all(timeout=5)
