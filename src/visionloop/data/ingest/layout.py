"""Where each file of a drop sits: its label (the class folder) or why it has none.

A drop is a folder of class-named folders, possibly wrapped in one enclosing folder (what
zipping a folder gives); that wrapper is unwrapped. OS litter and files outside a class
folder are kept apart, with their reason, before a byte of them is decoded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from visionloop.artifacts import raw_store
from visionloop.data.ingest.readers import DropFile, DropRejected, is_os_metadata
from visionloop.data.ingest.reasons import DropReason, FileReason
from visionloop.data.ingest.screening import Screened

STAGED_IMAGES = "images"  # in the stage folder: one file per accepted image


class FileOutcome(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    QUARANTINED = "quarantined"


@dataclass
class DropEntry:
    """One file of a drop on its way through screening and the decisions."""

    source: DropFile
    parts: tuple[str, ...]  # after unwrapping a single top folder
    label: str | None
    verdict: Screened | None = None
    reason: FileReason | None = None
    detail: str = ""
    outcome: FileOutcome | None = None

    @property
    def sha256(self) -> str:
        return self.verdict.sha256 if self.verdict else ""


def lay_out(drop_files: list[DropFile], label_pattern: str) -> list[DropEntry]:
    """Unwrap one enclosing folder, find each file's label, refuse unsafe label names."""
    content = [f.parts for f in drop_files if not is_os_metadata(f.parts)]
    single_top = len({p[0] for p in content}) == 1
    strip = 1 if content and single_top and all(len(p) >= 3 for p in content) else 0
    entries = []
    for source in drop_files:
        parts = source.parts if is_os_metadata(source.parts) else source.parts[strip:]
        label = parts[0] if len(parts) == 2 and not is_os_metadata(parts) else None
        entries.append(DropEntry(source, parts, label))
    pattern = re.compile(label_pattern)
    for label in sorted({e.label for e in entries if e.label is not None}):
        if not pattern.fullmatch(label):
            raise DropRejected(
                DropReason.BAD_LABEL,
                f"class folder {label!r} does not match data.ingest.label_pattern",
            )
    return entries


def placement_reason(entry: DropEntry) -> tuple[FileReason, str]:
    """Why a file with no label is quarantined."""
    if is_os_metadata(entry.source.parts):
        return FileReason.OS_METADATA, "not part of the data"
    if len(entry.parts) == 1:
        return FileReason.NO_LABEL, "files must sit inside a class folder"
    return FileReason.TOO_DEEP, f"nested below class folder '{entry.parts[0]}'"


def staged_image(verdict: Screened) -> str:
    return staged_member(verdict.sha256, raw_store.member_name(verdict.sha256, verdict.extension))


def staged_member(sha256: str, member: str) -> str:
    """Where an accepted image waits in the stage folder until the commit packs the shard."""
    return f"{STAGED_IMAGES}/{sha256[:2]}/{member}"


def quarantine_file(stage: Path, entry: DropEntry) -> Path:
    return stage / "quarantine" / "files" / entry.source.relpath
