"""Short human-readable reports of a pipeline run, for Prefect artifacts and the CLI.

They read the files the stages wrote, so a report is the same whether a stage ran now or
was skipped because DVC found it up to date.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from visionloop.artifacts import (
    candidate,
    evaluation,
    evaluation_report,
    raw_store,
    validation_report,
)
from visionloop.artifacts.verdict import (
    VERDICT_MD,
    format_value,
    read_verdict,
    read_verdict_markdown,
)
from visionloop.config import Config
from visionloop.data.ingest.summary import check_lines, problem
from visionloop.data.validation import read_summary
from visionloop.pipeline.reproduce import StageOutcome

HEADLINE_METRICS = ("top1", "f1_macro", "min_class_recall", "top5", "ece")


# The library functions the retrain flow runs as Prefect tasks, and the part of a retrain's
# time each one's task runs are (a task run's key starts with its function's name).
TASK_PARTS = {
    "ingest_with_checks": "ingest",
    "register_and_promote": "register",
    "push": "push",
}
# How a retrain's wall time is split, in the order it is printed: the stages' own time, then
# the overhead. dvc: status and commit around each stage; start: a worker's run from its
# trigger to its flow running (pickup, new process, imports); prefect: the rest of the flow
# run (task and flow runs, the subflow, artifacts, events, heartbeats, the flow's own glue,
# and a temporary server's start).
TIME_PARTS = ("stages", "ingest", "dvc", "register", "push", "start", "prefect")


def pipeline_summary(outcomes: list[StageOutcome], registration: dict[str, Any]) -> dict:
    return {
        "stages": {
            o.name: {
                "ran": o.ran,
                "seconds": round(o.seconds, 3),
                "dvc_seconds": round(o.dvc_seconds, 3),
            }
            for o in outcomes
        },
        "stage_seconds": round(sum(o.seconds for o in outcomes), 3),
        "dvc_seconds": round(sum(o.dvc_seconds for o in outcomes), 3),
        "registration": registration,
    }


def time_parts(
    wall: float,
    stage_seconds: float,
    dvc_seconds: float,
    task_seconds: dict[str, float],
    start: float = 0.0,
) -> dict[str, float]:
    """A retrain's wall time split into TIME_PARTS. `task_seconds`: seconds each task
    function's runs spent Running, by function name (from Prefect's task runs); what no part
    claims is Prefect's and the flow's own (`prefect`)."""
    parts = dict.fromkeys(TIME_PARTS, 0.0)
    parts.update(stages=stage_seconds, dvc=dvc_seconds, start=start)
    for function, seconds in task_seconds.items():
        if function in TASK_PARTS:
            parts[TASK_PARTS[function]] += seconds
    parts["prefect"] = wall - sum(parts.values())
    return parts


def time_line(wall: float, parts: dict[str, float]) -> str:
    """`time: 62.2 s in all, 52.6 s in the stages, 9.6 s of overhead (15%): ingest 1.2, ...`"""
    overhead = wall - parts["stages"]
    shown = ", ".join(
        f"{name} {parts[name]:.1f}" for name in TIME_PARTS[1:] if name != "start" or parts[name]
    )
    return (
        f"time: {wall:.1f} s in all, {parts['stages']:.1f} s in the stages, {overhead:.1f} s of "
        f"overhead ({overhead / wall:.0%}): {shown}"
    )


def summary_block(config: Config, summary: dict[str, Any]) -> list[str]:
    """What a retrain did, for the terminal: the drops (`summary["intake"]`: files in =
    accepted + duplicates + quarantined), validation, test metrics, the gate's rules and
    verdict, the registry's action, and where each report is. Read from the stages' files,
    like the Prefect artifacts."""
    lines = ["drops:", *(f"  {line}" for line in summary.get("intake", []))]
    lines.append(f"validation: {_validation_lines(config)[0]}")
    lines.append(f"stages: {one_line(summary)} ({summary['stage_seconds']:.0f} s)")
    lines.append(f"test: {_test_line(config)}")
    lines += _gate_lines(config)
    lines.append(f"registry: {_registry_line(summary.get('registration') or {})}")
    lines += ["reports:", *(f"  {name:<11} {path}" for name, path in _report_paths(config))]
    return lines


def _test_line(config: Config) -> str:
    metrics = evaluation.read_metrics(config.evaluate.dir)
    if not metrics:
        return "(no evaluation)"
    return (
        f"top-1 {metrics['top1']:.4f}, macro-F1 {metrics.get('f1_macro', float('nan')):.4f}, "
        f"lowest class recall {metrics.get('min_class_recall', float('nan')):.4f}"
    )


def _gate_lines(config: Config) -> list[str]:
    verdict = read_verdict(config.gate.dir)
    if verdict is None:
        return ["gate: (no verdict)"]
    lines = [f"gate: {'passed' if verdict['passed'] else 'failed'}: {verdict['summary']}"]
    for name, rule in verdict["rules"].items():
        lines.append(
            f"  {'pass' if rule['passed'] else 'FAIL'}  {name}: {format_value(rule['value'])} "
            f"(threshold {format_value(rule['threshold'])}) {rule['detail']}".rstrip()
        )
    return lines


def _registry_line(registration: dict[str, Any]) -> str:
    if not registration:
        return "no change"
    action = registration.get("action", "no change")
    version = registration.get("version")
    return f"{action}" + (f" v{version}" if version else "")


def _report_paths(config: Config) -> list[tuple[str, str]]:
    def shown(path: Path) -> str:
        return os.path.relpath(path, config.root) if path.is_absolute() else str(path)

    return [
        ("validation", shown(validation_report.index_path(config.data.validation.report_dir))),
        ("evaluation", shown(evaluation_report.report_path(config.evaluate.dir))),
        ("verdict", shown(config.gate.dir / VERDICT_MD)),
    ]


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
    lines += ["| stage | status | seconds | dvc seconds |", "|---|---|---|---|"]
    lines += [
        f"| {o.name} | {'ran' if o.ran else 'up to date'} | {o.seconds:.1f} | {o.dvc_seconds:.1f} |"
        for o in outcomes
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
    warnings = summary.get("warnings", 0)
    return [
        f"{status}: {summary.get('expectations', '?')} expectations on {summary.get('images')} "
        f"images, {summary.get('classes')} classes, {warnings} warning(s)"
    ]


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
