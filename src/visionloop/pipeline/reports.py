"""Short human-readable reports of a pipeline run, for Prefect artifacts and the CLI.

They read the files the stages wrote, so a report is the same whether a stage ran now or
was skipped because DVC found it up to date.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionloop.artifacts import candidate, evaluation, raw_store
from visionloop.artifacts.verdict import read_verdict_markdown
from visionloop.config import Config
from visionloop.data.ingest.summary import check_lines, problem
from visionloop.data.validation import read_summary
from visionloop.pipeline.reproduce import StageOutcome

HEADLINE_METRICS = ("top1", "f1_macro", "min_class_recall", "top5", "ece")


def pipeline_summary(outcomes: list[StageOutcome], registration: dict[str, Any]) -> dict:
    return {
        "stages": {o.name: {"ran": o.ran, "seconds": round(o.seconds, 3)} for o in outcomes},
        "stage_seconds": round(sum(o.seconds for o in outcomes), 3),
        "registration": registration,
    }


def one_line(summary: dict[str, Any]) -> str:
    ran = [name for name, stage in summary["stages"].items() if stage["ran"]]
    registration = summary.get("registration") or {}
    version = registration.get("version")
    action = registration.get("action", "no registry change")
    return f"ran {', '.join(ran) or 'nothing (all up to date)'}; {action}" + (
        f" v{version}" if version else ""
    )


def pipeline_markdown(
    config: Config, outcomes: list[StageOutcome], registration: dict[str, Any]
) -> str:
    lines = [f"# visionloop pipeline: {config.registry.model_name}", ""]
    lines += ["| stage | status | seconds |", "|---|---|---|"]
    lines += [
        f"| {o.name} | {'ran' if o.ran else 'up to date'} | {o.seconds:.1f} |" for o in outcomes
    ]
    lines += ["", "## Validation", "", *_validation_lines(config)]
    lines += ["", "## Latest drop's checks", "", *_check_lines(config)]
    lines += ["", "## Test metrics", "", *_metric_lines(config)]
    lines += ["", "## Registry", ""]
    lines += [f"- **{key}**: {value}" for key, value in sorted(registration.items())]
    lines += _run_lines(config)
    verdict = read_verdict_markdown(config.gate.dir)
    lines += ["", verdict] if verdict else []
    return "\n".join(lines) + "\n"


def intake_markdown(result: Any) -> str:
    """The ingest result (visionloop.data.ingest.run.IngestResult) as a markdown table."""
    lines = [
        "# Drops taken in",
        "",
        "| drop | status | files | accepted | duplicates | quarantined |",
    ]
    lines.append("|---|---|---|---|---|---|")
    for drop in result.drops:
        lines.append(
            f"| {Path(drop.path).name} | {drop.status} | {drop.files} | {drop.accepted} "
            f"| {drop.duplicates} | {drop.quarantined_total} |"
        )
    if not result.drops:
        lines.append("| (no new drop) | | | | | |")
    checked = [drop for drop in result.drops if drop.checks]
    if checked:
        lines += ["", "## Checks (drift, labels)", ""]
        for drop in checked:
            lines += [f"- **{drop.name}**"] + [
                f"  - {line.strip()}" for line in check_lines(drop.checks)
            ]
    lines += ["", *(f"- {problem(drop)}" for drop in result.problems())]
    lines.append(f"\n{result.images} images in data/raw, class map v{result.class_version}.")
    return "\n".join(lines) + "\n"


def drift_markdown(report: dict[str, Any]) -> str:
    """The prediction-log drift report (visionloop.monitoring.log_drift) as markdown."""
    drift = report["drift"]
    lines = [f"# Prediction-log drift since {report['since']}", ""]
    if "skipped" in drift:
        return "\n".join([*lines, f"Skipped: {drift['skipped']}."]) + "\n"
    lines += [f"**Verdict: {drift['verdict']}** (model version {report.get('model')})", ""]
    lines += ["| figure | value |", "|---|---|"]
    for key in (
        "p_value",
        "mmd_p",
        "mmd2",
        "ks_p",
        "ks_d",
        "images",
        "mean_confidence",
        "reference_confidence",
    ):
        value = drift.get(key)
        lines.append(f"| {key} | {value if value is None else f'{value:.4g}'} |")
    return "\n".join(lines) + "\n"


def _validation_lines(config: Config) -> list[str]:
    summary = read_summary(config.data.validation.report_dir)
    if summary is None:
        return ["(no validation summary)"]
    status = "passed" if summary.get("success") else "FAILED"
    return [f"{status}: {summary.get('images')} images, {summary.get('classes')} classes"]


def _check_lines(config: Config) -> list[str]:
    """Drift and label checks of the newest drop in the ledger (monitoring.intake's report)."""
    drops, _ = raw_store.read_ledger(config.data.raw_dir)
    if not drops:
        return ["(no drop ingested)"]
    latest = drops[-1]
    path = config.monitoring.dir / f"{latest.get('name')}-{latest.get('drop_id')}.json"
    try:
        checks = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return [f"(no checks recorded for drop {latest.get('name')})"]
    return [f"- **{latest.get('name')}**"] + [f"  - {line.strip()}" for line in check_lines(checks)]


def _metric_lines(config: Config) -> list[str]:
    metrics = evaluation.read_metrics(config.evaluate.dir) or {}
    shown = [f"| {k} | {metrics[k]:.4f} |" for k in HEADLINE_METRICS if k in metrics]
    return ["| metric | value |", "|---|---|", *shown] if shown else ["(no metrics)"]


def _run_lines(config: Config) -> list[str]:
    run_id = candidate.read_run_id(config.train.dir)
    if not run_id:
        return []
    return [f"- **MLflow run**: `{run_id}` (experiment `{config.registry.experiment}`)"]
