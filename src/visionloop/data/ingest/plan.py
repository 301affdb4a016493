"""The commit plan of one drop: everything the commit does, decided before it starts.

Staging ends by writing the plan into the stage folder (`seal` in commit.py); from then on
the commit only carries it out, so a process killed half-way is finished from the plan by
the next ingest. The plan is plain data (JSON in `plan.json`).
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections import Counter
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from visionloop.artifacts import raw_store
from visionloop.atomic import write_json_atomic
from visionloop.config import Config
from visionloop.data.ingest.decisions import Decisions
from visionloop.data.ingest.layout import DropEntry, FileOutcome
from visionloop.data.ingest.readers import drop_name, is_os_metadata
from visionloop.data.ingest.reasons import FileReason

REPORT_FILE = "report.json"
QUARANTINE_REASONS = "reasons.json"


@dataclass(frozen=True)
class CommitPlan:
    drop_id: str
    name: str
    content_sha256: str
    source: str  # where the drop was read from
    done_path: str | None  # where it is moved after the commit (None: left where it is)
    add_rows: list[dict[str, str]]  # manifest rows of the accepted images, in shard order
    remove: list[dict[str, str]]  # stored images taken out (a new copy conflicts with them)
    classes: dict[str, Any] | None  # the new class map, when the drop brings classes
    new_conflicts: dict[str, list[str]]  # sha256 -> labels, added to the ledger's bans
    ledger_entry: dict[str, Any]  # the drop's line in drops.json
    quarantine_target: str
    report_target: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> CommitPlan:
        return cls(**raw)


def content_hash(entries: list[DropEntry]) -> str:
    """The drop's identity: its files' paths and contents, whatever the container."""
    lines = sorted(
        f"{'/'.join(e.parts)}\0{e.sha256 or e.source.size}\n"
        for e in entries
        if not is_os_metadata(e.source.parts)
    )
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def build_plan(
    config: Config,
    path: Path,
    kind: str,
    entries: list[DropEntry],
    state: raw_store.RawState,
    decisions: Decisions,
    content_sha: str,
) -> CommitPlan:
    drop_id = content_sha[:16]
    name, rules = drop_name(path), config.data.ingest
    now = datetime.now(UTC).isoformat(timespec="seconds")
    accepted = sorted(
        (e for e in entries if e.outcome == FileOutcome.ACCEPTED), key=lambda e: e.parts
    )
    new_classes = sorted({e.label for e in accepted} - set(state.classes))
    classes = None
    if new_classes:
        classes = {"version": state.class_version + 1, "classes": state.classes + new_classes}
    in_incoming = path.parent.resolve() == config.data.incoming_dir.resolve()
    # The shard holds the accepted images in this order; its layout is known from their sizes.
    offsets = raw_store.member_offsets(e.verdict.size for e in accepted if e.verdict)
    return CommitPlan(
        drop_id=drop_id,
        name=name,
        content_sha256=content_sha,
        source=str(path),
        done_path=str(rules.done_dir / path.name) if in_incoming else None,
        add_rows=[_row(e, drop_id, now, o) for e, o in zip(accepted, offsets, strict=True)],
        remove=decisions.removals,
        classes=classes,
        new_conflicts=decisions.conflicts,
        ledger_entry={
            "drop_id": drop_id,
            "name": name,
            "content_sha256": content_sha,
            "kind": kind,
            "ingested_at": now,
            **_counts(entries),
            "new_classes": new_classes,
            "class_map_version": (classes or {"version": state.class_version})["version"],
        },
        quarantine_target=str(config.data.quarantine_dir / f"{name}-{drop_id}"),
        report_target=str(rules.report_dir / f"{name}-{drop_id}.json"),
    )


def write_stage_files(stage: Path, plan: CommitPlan, entries: list[DropEntry]) -> None:
    """The drop's report and, when files were rejected, the quarantine's reasons."""
    rejected = [e for e in entries if e.outcome == FileOutcome.QUARANTINED]
    if rejected or plan.remove:
        write_json_atomic(
            stage / "quarantine" / QUARANTINE_REASONS, _quarantine_reasons(plan, rejected)
        )
    write_json_atomic(stage / REPORT_FILE, _report(plan, entries))


def _quarantine_reasons(plan: CommitPlan, rejected: list[DropEntry]) -> dict[str, Any]:
    return {
        "drop": plan.name,
        "drop_id": plan.drop_id,
        "source": plan.source,
        "quarantined_at": plan.ledger_entry["ingested_at"],
        "whole_drop": False,
        "files": [
            {
                "path": f"files/{e.source.relpath}",
                "reason": str(e.reason),
                "detail": e.detail,
                "sha256": e.sha256,
                "copied": e.reason != FileReason.UNREADABLE,
            }
            for e in rejected
        ],
        "removed_from_store": plan.remove,
    }


def _report(plan: CommitPlan, entries: list[DropEntry]) -> dict[str, Any]:
    return {
        **plan.ledger_entry,
        "source": plan.source,
        "files": [
            {
                "path": e.source.relpath,
                "label": e.label,
                "sha256": e.sha256,
                "outcome": e.outcome,
                "reason": str(e.reason) if e.reason else None,
                "detail": e.detail,
            }
            for e in entries
        ],
    }


def _counts(entries: list[DropEntry]) -> dict[str, Any]:
    outcomes = Counter(e.outcome for e in entries)
    reasons = Counter(str(e.reason) for e in entries if e.outcome == FileOutcome.QUARANTINED)
    return {
        "files": len(entries),
        "accepted": outcomes[FileOutcome.ACCEPTED],
        "duplicates": outcomes[FileOutcome.DUPLICATE],
        "quarantined": dict(sorted(reasons.items())),
    }


def _row(entry: DropEntry, drop_id: str, now: str, offset: int) -> dict[str, str]:
    verdict = entry.verdict
    assert verdict is not None and entry.label is not None
    return {
        "sha256": verdict.sha256,
        "label": entry.label,
        "source_name": printable_name(entry.parts[-1]),
        "drop_id": drop_id,
        "format": verdict.format,
        "mode": verdict.mode,
        "width": str(verdict.width),
        "height": str(verdict.height),
        "frames": str(verdict.frames),
        "orientation": str(verdict.orientation),
        "normalisation": verdict.normalisation,
        "bytes": str(verdict.size),
        "member": raw_store.member_name(verdict.sha256, verdict.extension),
        "offset": str(offset),
        "ingested_at": now,
    }


def printable_name(name: str) -> str:
    """NFC, with control characters and undecodable bytes written as escapes."""
    return "".join(
        ch
        if not unicodedata.category(ch).startswith("C")
        else f"\\x{ord(ch):02x}"
        if ord(ch) < 0x100
        else f"\\u{ord(ch):04x}"
        for ch in unicodedata.normalize("NFC", name)
    )
