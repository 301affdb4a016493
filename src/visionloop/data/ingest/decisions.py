"""Each screened image of a drop against what is stored: accepted, duplicate, or a label
conflict (the same bytes with two labels: every copy is quarantined, stored ones too)."""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from visionloop.artifacts import raw_store
from visionloop.data.ingest.layout import DropEntry, FileOutcome, quarantine_file, staged_image
from visionloop.data.ingest.reasons import FileReason


@dataclass(frozen=True)
class Decisions:
    removals: list[dict[str, str]]  # stored images a new copy conflicts with: taken out
    conflicts: dict[str, list[str]]  # sha256 -> every label it came with


def decide(
    entries: list[DropEntry], state: raw_store.RawState, raw_dir: Path, stage: Path
) -> Decisions:
    """Set every entry's outcome; return the stored images to take out and the conflicts."""
    stored = state.labels
    copies: dict[str, list[DropEntry]] = defaultdict(list)
    # In path order, so which copy is kept does not depend on the container's order.
    for entry in sorted(entries, key=lambda e: e.parts):
        if entry.reason is None:
            copies[entry.sha256].append(entry)
        else:
            entry.outcome = FileOutcome.QUARANTINED
    removals, conflicts = [], {}
    for sha, group in copies.items():
        labels = {e.label for e in group} | set(state.conflicts.get(sha, []))
        labels |= {stored[sha]} if sha in stored else set()
        if len(labels) > 1:
            conflicts[sha] = sorted(labels)
            _quarantine_conflict(group, conflicts[sha], stage)
            if sha in stored:
                removals.append(_removal(raw_store.stored_row(raw_dir, sha)))
            continue
        for number, entry in enumerate(group):
            first_copy = number == 0 and sha not in stored
            entry.outcome = FileOutcome.ACCEPTED if first_copy else FileOutcome.DUPLICATE
    return Decisions(removals, conflicts)


def _quarantine_conflict(group: list[DropEntry], labels: list[str], stage: Path) -> None:
    staged = stage / staged_image(group[0].verdict)
    for entry in group:
        entry.reason, entry.outcome = FileReason.LABEL_CONFLICT, FileOutcome.QUARANTINED
        entry.detail = f"the same bytes are labelled {labels}"
        if staged.exists():
            target = quarantine_file(stage, entry)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(staged, target)
    staged.unlink(missing_ok=True)


def _removal(row: dict[str, str]) -> dict[str, str]:
    """A stored image leaving the manifest: where its bytes are (its shard keeps them, shards
    never change) and where the quarantine gets a copy."""
    where = {key: row[key] for key in ("sha256", "label", "drop_id", "member", "offset", "bytes")}
    return {**where, "quarantine_path": f"stored/{row['label']}/{row['member']}"}
