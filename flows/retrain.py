"""The loop: new drops in, a model trained on them out, promoted only through the gate.

- `train_pipeline`: validate -> split -> prepare -> train -> evaluate -> gate, each stage
  run as DVC would run it (so `dvc status` is clean afterwards), then register/promote.
- `retrain`: take the complete drops in -> train_pipeline -> `dvc push`; one at a time.
- `monitor`: drift of the serving prediction log's window against the champion's training
  images; a `visionloop.drift.detected` event on warn or alert.
- `watch_drops`: announce each complete drop once, as a Prefect event that starts `retrain`;
  deployed, it is one long-lived run that keeps looking (not a flow run per look).
"""

from __future__ import annotations

import time

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.events import emit_event
from prefect.states import Cancelled, Completed, Failed

from flows.library_logs import library_logs_to_prefect
from flows.notifications import DRIFT_EVENT, PROMOTED_EVENT
from tasks.actions import check_prediction_log, ingest_drops, push_data, register_and_promote
from tasks.pipeline import reproduce_stage
from visionloop.config import DEFAULT_PARAMS, Config, load_config
from visionloop.data import arrivals
from visionloop.data.ingest.summary import format_summary, problem
from visionloop.locking import AlreadyRunning, exclusive
from visionloop.pipeline import reports
from visionloop.pipeline.reproduce import pipeline_order

DROP_COMPLETE_EVENT = "visionloop.drop.complete"


# Deployments start flows with JSON parameters, so the deployed flows take the params
# file's path; the subflow is only ever called with the config its caller already loaded.
@flow(name="train-pipeline")
def train_pipeline(config: Config) -> dict:
    with library_logs_to_prefect():
        return _run_pipeline(config)


def _run_pipeline(config: Config) -> dict:
    stage = reproduce_stage.with_options(timeout_seconds=config.flows.stage_timeout_seconds)
    outcomes = [stage(config, name) for name in pipeline_order()]
    registration = register_and_promote(config)
    if registration.get("action") == "promoted":
        emit_event(
            PROMOTED_EVENT,
            resource={"prefect.resource.id": f"visionloop.model.{config.registry.model_name}"},
            payload={"model": config.registry.model_name, **registration},
        )
    create_markdown_artifact(
        key="pipeline-report", markdown=reports.pipeline_markdown(config, outcomes, registration)
    )
    return reports.pipeline_summary(outcomes, registration)


@flow(name="retrain")
def retrain(params: str = str(DEFAULT_PARAMS)):
    config = load_config(params)
    try:
        with library_logs_to_prefect(), exclusive(config.flows.lock_file, "retraining"):
            return _retrain_locked(config)
    except AlreadyRunning as exc:
        get_run_logger().info("skipped: %s", exc)
        return Cancelled(message=f"skipped: {exc}")


def _retrain_locked(config: Config):
    intake = ingest_drops(config, arrivals.complete_drops(config))
    for drop in intake.drops:
        announce_drift(f"drop.{drop.name}", drop.checks.get("drift", {}), drop.checks)
    create_markdown_artifact(key="intake", markdown=reports.intake_markdown(intake))
    if intake.problems():
        # The drop needs a person; training waits so the champion stays as it is.
        return Failed(message="; ".join(problem(drop) for drop in intake.problems()))
    summary = train_pipeline(config)
    if config.flows.push_after_retrain:
        push_data(config)
    summary["intake"] = format_summary(intake)
    return Completed(message=reports.one_line(summary), data=summary)


def announce_drift(source: str, drift: dict, report: dict) -> None:
    """A `visionloop.drift.detected` event for a warn or alert verdict, with the report: what
    the library returned, sent from the flow side (the library never imports Prefect)."""
    verdict = drift.get("verdict", "none")
    if verdict == "none":
        return
    emit_event(
        DRIFT_EVENT,
        resource={"prefect.resource.id": f"visionloop.{source}", "visionloop.verdict": verdict},
        payload={
            "source": source,
            "verdict": verdict,
            "model": report.get("model"),
            "drift": drift,
            "report": report.get("report_path") or report.get("log"),
        },
    )
    get_run_logger().warning("drift %s on %s (p %.3g)", verdict, source, drift["p_value"])


@flow(name="monitor")
def monitor(params: str = str(DEFAULT_PARAMS)) -> dict:
    """Prediction-log drift: the report, and the event when it is warn or alert."""
    config = load_config(params)
    with library_logs_to_prefect():
        report = check_prediction_log(config)
    announce_drift("prediction-log", report["drift"], report)
    create_markdown_artifact(key="prediction-log-drift", markdown=reports.drift_markdown(report))
    return report


@flow(name="watch-drops")
def watch_drops(params: str = str(DEFAULT_PARAMS), poll_seconds: float = 0) -> list[str]:
    """Announce each complete drop once. With poll_seconds > 0, look again every so often
    until the run is cancelled: the deployed watcher is one long-lived run, so the run list
    does not grow by a run per look."""
    config = load_config(params)
    with library_logs_to_prefect():
        announced = _announce_new_drops(config)
        while poll_seconds > 0:
            time.sleep(poll_seconds)
            announced += _announce_new_drops(config)
    return announced


def _announce_new_drops(config: Config) -> list[str]:
    state_file = config.flows.lock_file.with_name("announced.json")
    new = arrivals.unannounced(arrivals.complete_drops(config), state_file)
    for drop in new:
        emit_event(
            DROP_COMPLETE_EVENT,
            resource={"prefect.resource.id": f"visionloop.drop.{drop.name}"},
            payload={"path": str(drop)},
        )
        get_run_logger().info("drop %s is complete: announced %s", drop.name, DROP_COMPLETE_EVENT)
    arrivals.mark_announced(new, state_file)
    return [d.name for d in new]
