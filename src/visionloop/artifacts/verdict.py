"""The gate's verdict, written by the gate stage and read by the registry and the reports.

<gate.dir>/verdict.json   passed, mode, every rule with value and threshold, statistics
<gate.dir>/verdict.md     the same as a table, for people
<gate.dir>/summary.json   a handful of scalars from it: the gate's DVC metrics
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from visionloop.atomic import write_json_atomic, write_text_atomic

VERDICT_JSON = "verdict.json"
VERDICT_MD = "verdict.md"
SUMMARY_JSON = "summary.json"

# The verdict's `mode`: which rules applied.
FIRST_MODEL = "first_model"
CHALLENGE = "challenge"
CLASS_MAP_CHANGED = "class_map_changed"
ALREADY_CHAMPION = "already_champion"


def write_verdict(out_dir: Path, verdict: dict[str, Any]) -> None:
    write_json_atomic(out_dir / VERDICT_JSON, verdict)
    write_text_atomic(out_dir / VERDICT_MD, verdict_markdown(verdict))
    write_json_atomic(out_dir / SUMMARY_JSON, verdict_scalars(verdict))


def verdict_scalars(verdict: dict[str, Any]) -> dict[str, Any]:
    """What `dvc metrics show` needs from a verdict: passed, how, and the two top-1s."""
    champion = verdict["champion"] or {}
    return {
        "passed": bool(verdict["passed"]),
        "mode": verdict["mode"],
        "rules_failed": sum(not rule["passed"] for rule in verdict["rules"].values()),
        "candidate_top1": verdict["candidate"]["top1"],
        "champion_top1": champion.get("top1"),
        "test_images": verdict.get("test_set", {}).get("n"),
    }


def read_verdict(gate_dir: Path) -> dict[str, Any] | None:
    path = gate_dir / VERDICT_JSON
    return json.loads(path.read_text()) if path.exists() else None


def read_verdict_markdown(gate_dir: Path) -> str:
    path = gate_dir / VERDICT_MD
    return path.read_text(encoding="utf-8") if path.exists() else ""


def verdict_markdown(verdict: dict[str, Any]) -> str:
    candidate, champion = verdict["candidate"], verdict["champion"]
    against = f"champion v{champion['version']} ({scores(champion)})" if champion else "no champion"
    lines = [
        f"# Gate verdict: {'passed' if verdict['passed'] else 'failed'}",
        "",
        verdict["summary"],
        "",
        f"Candidate `{candidate['bundle_sha256'][:12]}` ({scores(candidate)}) "
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
    baselines = verdict.get("statistics", {}).get("baselines") or {}
    if baselines:
        lines += ["", "| baseline | top-1 | macro-F1 | lowest class recall | what |"]
        lines += ["|---|---|---|---|---|"]
        for name, score in baselines.items():
            lines.append(
                f"| {name} | {format_value(score['top1'])} | {format_value(score['f1_macro'])} "
                f"| {format_value(score['min_class_recall'])} | {score['description']} |"
            )
    return "\n".join(lines) + "\n"


def scores(model: dict[str, Any]) -> str:
    """top-1 with macro-F1 and the lowest class recall beside it, when known."""
    text = f"top-1 {format_value(model['top1'])}"
    if model.get("f1_macro") is not None:
        text += (
            f", macro-F1 {format_value(model['f1_macro'])}, lowest class recall "
            f"{format_value(model['min_class_recall'])} ({model['min_recall_class']})"
        )
    return text


def format_value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"
