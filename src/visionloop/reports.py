"""Short human-readable reports of a pipeline run (for Prefect artifacts and the CLI)."""

from __future__ import annotations

from typing import Any

from visionloop.config import Config
from visionloop.pipeline import StageOutcome


def pipeline_summary(outcomes: list[StageOutcome], registration: dict[str, Any]) -> dict:
    return {
        "stages": {o.name: {"ran": o.ran, "seconds": round(o.seconds, 3)} for o in outcomes},
        "stage_seconds": round(sum(o.seconds for o in outcomes), 3),
        "registration": registration,
    }


def one_line(summary: dict[str, Any]) -> str:
    ran = [name for name, s in summary["stages"].items() if s["ran"]]
    registration = summary.get("registration") or {}
    action = registration.get("action", "no registry change")
    version = registration.get("version")
    return f"ran {', '.join(ran) or 'nothing (all up to date)'}; {action}" + (
        f" v{version}" if version else ""
    )


def pipeline_markdown(
    config: Config, outcomes: list[StageOutcome], registration: dict[str, Any]
) -> str:
    rows = "\n".join(
        f"| {o.name} | {'ran' if o.ran else 'skipped'} | {o.seconds:.1f} | {o.reason[:80]} |"
        for o in outcomes
    )
    lines = [
        f"# visionloop pipeline: {config.registry.model_name}",
        "",
        "| stage | status | seconds | why |",
        "|---|---|---|---|",
        rows,
        "",
        "## Registry",
        "",
        *(f"- **{k}**: {v}" for k, v in sorted(registration.items())),
    ]
    return "\n".join(lines) + "\n"
