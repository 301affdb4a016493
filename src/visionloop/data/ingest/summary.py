"""What a person reads about an ingest: lines for the terminal, one sentence per problem
with what to do about it, and the error the CLI exits with when a drop needs attention."""

from __future__ import annotations

import json
from pathlib import Path

from visionloop.data.ingest.run import HELD_FOR_LABELS, DropOutcome, DropStatus, IngestResult
from visionloop.errors import VisionloopError


def problem(drop: DropOutcome) -> str:
    """One sentence for a rejected or held drop: which, why, where, what to do."""
    name = Path(drop.path).name
    if drop.status == DropStatus.REJECTED:
        where = f"moved to {drop.quarantine_path}" if drop.moved_to else "left in place"
        return (
            f"drop '{name}' rejected ({drop.reason}: {drop.detail}); {where}, "
            f"reasons in reasons.json; fix it and put it back in the incoming folder"
        )
    if drop.status == DropStatus.HELD and drop.reason == HELD_FOR_LABELS:
        return (
            f"drop '{name}' held: {drop.detail}; the suspects are in "
            f"{drop.checks.get('report_path', 'the monitoring report')}: fix those labels "
            f"(move the files to the right class folders) and ingest again, or accept the "
            f"drop as it is with `visionloop data ingest --accept-label-issues {name}`"
        )
    if drop.status == DropStatus.HELD:
        return (
            f"drop '{name}' held: new classes {drop.new_classes} are not in the class "
            f"map; rename those folders to known classes, or accept them with "
            f"`visionloop data ingest --allow-new-classes` "
            f"(or data.ingest.allow_new_classes: true)"
        )
    return ""


def format_summary(result: IngestResult) -> list[str]:
    """Human lines: per drop, files in = accepted + duplicates + quarantined, per reason."""
    lines = [f"finished an interrupted commit of drop {d}" for d in result.recovered]
    lines += [f"skipped {name} (still arriving)" for name in result.skipped]
    for drop in result.drops:
        lines.extend(_drop_lines(drop))
    if not result.drops and not result.recovered:
        lines.append("no drops to ingest")
    lines.append(
        f"data/raw: {result.images} images, class map v{result.class_version} "
        f"({len(result.classes)} classes)" + ("; recorded with `dvc add`" if result.tracked else "")
    )
    return lines


def _drop_lines(drop: DropOutcome) -> list[str]:
    if drop.status == DropStatus.REJECTED:
        return [f"{drop.name}: rejected ({drop.reason}) -> {drop.quarantine_path}/reasons.json"]
    if drop.status == DropStatus.HELD and drop.reason == HELD_FOR_LABELS:
        return [f"{drop.name}: held for its labels ({drop.detail}); left in place"]
    if drop.status == DropStatus.HELD:
        return [f"{drop.name}: held, new classes {drop.new_classes}; left in place"]
    if drop.status == DropStatus.ALREADY_INGESTED:
        return [f"{drop.name}: already ingested as drop {drop.drop_id} ({drop.detail}); no change"]
    reasons = ", ".join(f"{r} {n}" for r, n in drop.quarantined.items()) or "none"
    lines = [
        f"{drop.name}: ingested as drop {drop.drop_id}: files in {drop.files} = accepted "
        f"{drop.accepted} + duplicates {drop.duplicates} + quarantined {drop.quarantined_total}"
    ]
    if drop.quarantined:
        lines.append(f"  quarantined: {reasons} -> {drop.quarantine_path}/reasons.json")
    if drop.new_classes:
        lines.append(f"  new classes: {', '.join(drop.new_classes)}")
    if drop.empty_folders:
        lines.append(f"  empty folders, no images taken from them: {', '.join(drop.empty_folders)}")
    lines += check_lines(drop.checks)
    return lines


def check_lines(checks: dict) -> list[str]:
    """The monitoring checks of a drop in two lines: drift, and its labels."""
    if not checks:
        return []
    drift = checks.get("drift", {})
    if "skipped" in drift:
        drift_text = f"skipped ({drift['skipped']})"
    else:
        drift_text = (
            f"{drift['verdict']} (p {drift['p_value']:.3g}; MMD p {drift['mmd_p']:.3g}, "
            f"KS p {drift['ks_p']:.3g})"
        )
    issues = checks.get("label_issues", {})
    if "skipped" in issues:
        label_text = f"skipped ({issues['skipped']})"
    else:
        label_text = f"{issues['count']} of {issues['checked']} suspected mislabelled"
    pairs = len(checks.get("near_duplicate_conflicts", []))
    where = checks.get("report_path", "")
    return [
        f"  drift: {drift_text}",
        f"  labels: {label_text}; near-duplicate pairs with two labels: {pairs}"
        + (f" -> {where}" if where else ""),
    ]


def to_json(result: IngestResult) -> str:
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False)


class DropsNeedAttention(VisionloopError):
    """Some drops were rejected or held; the others were ingested."""

    exit_code = 3

    def __init__(self, result: IngestResult) -> None:
        problems = result.problems()
        super().__init__(
            f"{len(problems)} of {len(result.drops)} drops need attention: "
            + "; ".join(problem(p) for p in problems)
        )
