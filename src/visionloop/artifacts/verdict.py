"""The gate's verdict, written by the gate stage and read by the registry and the reports.

<gate.dir>/verdict.json   passed, mode, every rule with value and threshold (a DVC metric)
<gate.dir>/verdict.md     the same as a table, for people
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionloop.atomic import write_json_atomic, write_text_atomic

VERDICT_JSON = "verdict.json"
VERDICT_MD = "verdict.md"

# The verdict's `mode`: which rules applied.
FIRST_MODEL = "first_model"
CHALLENGE = "challenge"
CLASS_MAP_CHANGED = "class_map_changed"
ALREADY_CHAMPION = "already_champion"


def write_verdict(out_dir: Path, verdict: dict[str, Any]) -> None:
    write_json_atomic(out_dir / VERDICT_JSON, verdict)
    write_text_atomic(out_dir / VERDICT_MD, verdict_markdown(verdict))


def read_verdict(gate_dir: Path) -> dict[str, Any] | None:
    path = gate_dir / VERDICT_JSON
    return json.loads(path.read_text()) if path.exists() else None


def read_verdict_markdown(gate_dir: Path) -> str:
    path = gate_dir / VERDICT_MD
    return path.read_text(encoding="utf-8") if path.exists() else ""


def verdict_markdown(verdict: dict[str, Any]) -> str:
    candidate, champion = verdict["candidate"], verdict["champion"]
    against = (
        f"champion v{champion['version']} (top-1 {format_value(champion['top1'])})"
        if champion
        else "no champion"
    )
    lines = [
        f"# Gate verdict: {'passed' if verdict['passed'] else 'failed'}",
        "",
        verdict["summary"],
        "",
        f"Candidate `{candidate['bundle_sha256'][:12]}` (top-1 {format_value(candidate['top1'])}) "
        f"vs {against}, on {verdict.get('test_set', {}).get('n', '?')} test images.",
        "",
        "| rule | result | value | threshold | detail |",
        "|---|---|---|---|---|",
    ]
    for name, rule in verdict["rules"].items():
        lines.append(
            f"| {name} | {'pass' if rule['passed'] else 'FAIL'} | {format_value(rule['value'])} "
            f"| {format_value(rule['threshold'])} | {rule['detail']} |"
        )
    return "\n".join(lines) + "\n"


def format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
