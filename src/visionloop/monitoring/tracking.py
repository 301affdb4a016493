"""Each check's figures as an MLflow run (tag `visionloop.kind=monitoring`), beside the
training runs of the same experiment: p-values and effect sizes as metrics, the verdict and
the model version as tags, the report as an artifact."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from visionloop.config import Config
from visionloop.tracking import SQLITE_PREFIX, start_run, tracking_uri

log = logging.getLogger(__name__)


def store_exists(config: Config) -> bool:
    uri = tracking_uri(config)
    return not uri.startswith(SQLITE_PREFIX) or Path(uri.removeprefix(SQLITE_PREFIX)).exists()


METRICS = ("p_value", "mmd_p", "mmd2", "ks_p", "ks_d", "mean_confidence", "images")


def log_check(config: Config, name: str, report: dict[str, Any]) -> str | None:
    """The run id; None when nothing was checked (no model), when there is no tracking store
    yet (a check never creates one: training does), or when MLflow refused (logged)."""
    if report.get("model") is None or not store_exists(config):
        return None
    drift = report.get("drift", {})
    issues = report.get("label_issues", {})
    metrics = {f"drift.{k}": float(drift[k]) for k in METRICS if drift.get(k) is not None}
    if "count" in issues:
        metrics["labels.suspects"] = float(issues["count"])
        metrics["labels.share"] = float(issues["share"])
    if "near_duplicate_conflicts" in report:
        metrics["labels.near_duplicate_pairs"] = float(len(report["near_duplicate_conflicts"]))
    try:
        import mlflow

        with start_run(config, None, f"monitor {name}") as run:
            mlflow.set_tags(
                {
                    "visionloop.kind": "monitoring",
                    "monitoring.source": name,
                    "monitoring.model_version": str(report["model"]),
                    "drift.verdict": drift.get("verdict", "skipped"),
                }
            )
            mlflow.log_metrics(metrics)
            mlflow.log_dict(report, "monitoring/report.json")
            return run.info.run_id
    except Exception as exc:  # the check stands without its MLflow copy
        log.warning("monitoring: could not log %s to MLflow (%s)", name, exc)
        return None
