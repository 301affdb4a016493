"""`visionloop data ingest`: take drops in, each one whole or not at all.

For each drop: pre-scan it (readers), lay its files out (layout), screen every file into a
stage folder (staging, screening), decide duplicates, label conflicts and new classes
against what is stored (decisions), plan the commit (plan), seal and commit it (commit).
Every file ends up accepted, a duplicate, or quarantined with a reason. What the user reads
about the outcome is written by summary.py.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from visionloop.artifacts import raw_store
from visionloop.atomic import write_json_atomic
from visionloop.config import Config
from visionloop.data import versioning
from visionloop.data.arrivals import pending_drops
from visionloop.data.ingest import commit
from visionloop.data.ingest.decisions import decide
from visionloop.data.ingest.layout import DropEntry, FileOutcome, lay_out, staged_image
from visionloop.data.ingest.plan import (
    QUARANTINE_REASONS,
    CommitPlan,
    build_plan,
    content_hash,
    write_stage_files,
)
from visionloop.data.ingest.readers import DropReader, DropRejected, drop_name
from visionloop.data.ingest.reasons import DROP_REASONS
from visionloop.data.ingest.staging import Stager
from visionloop.errors import VisionloopError
from visionloop.locking import AlreadyRunning, exclusive

LOCK_FILE = "ingest.lock"
log = logging.getLogger(__name__)


class IngestBusy(AlreadyRunning):
    """Another ingest holds the lock."""


class DropStatus(StrEnum):
    INGESTED = "ingested"
    ALREADY_INGESTED = "already_ingested"
    REJECTED = "rejected"  # the whole drop refused: unsafe, damaged or empty
    HELD = "held"  # waits for a person: new classes, or (label_issues: hold) doubtful labels


HELD_FOR_LABELS = "label_issues"  # DropOutcome.reason of a drop held by the label checks


@dataclass(frozen=True)
class StagedImage:
    """An accepted image of a drop, staged but not yet committed: what the checks look at."""

    sha256: str
    label: str
    path: Path


# (drop name, drop id, its accepted images) -> the checks' report (visionloop.monitoring.intake);
# a non-empty "hold_reason" holds the drop under data.ingest.label_issues: hold.
DropChecks = Callable[[str, str, list[StagedImage]], dict[str, Any]]


@dataclass
class DropOutcome:
    """What happened to one drop."""

    name: str
    path: str
    status: DropStatus
    drop_id: str = ""
    files: int = 0
    accepted: int = 0
    duplicates: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    new_classes: list[str] = field(default_factory=list)
    reason: str = ""
    detail: str = ""
    quarantine_path: str = ""
    report_path: str = ""
    moved_to: str = ""
    checks: dict[str, Any] = field(default_factory=dict)  # drift and label issues, when run
    empty_folders: list[str] = field(default_factory=list)  # no files in them: no images

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    @property
    def needs_attention(self) -> bool:
        return self.status in (DropStatus.REJECTED, DropStatus.HELD)


@dataclass
class IngestResult:
    drops: list[DropOutcome]
    recovered: list[str]  # drop ids whose interrupted commit this run finished
    skipped: list[str]  # incoming entries still arriving (partial names, hidden)
    images: int  # rows in the manifest afterwards
    class_version: int
    classes: list[str]
    tracked: bool  # `dvc add` ran

    def problems(self) -> list[DropOutcome]:
        return [d for d in self.drops if d.needs_attention]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def ingest_drops(
    config: Config,
    drops: Iterable[str | Path] | None = None,
    *,
    allow_new_classes: bool | None = None,
    accept_label_issues: bool = False,
    progress: bool = False,
    checks: DropChecks | None = None,
) -> IngestResult:
    """Ingest the given drops (names in data.incoming_dir or paths), or every pending one.

    `checks` (visionloop.monitoring.intake) looks at each drop's accepted images before its
    commit; under data.ingest.label_issues: hold, a drop it finds doubtful is held unless
    `accept_label_issues`.
    """
    track = (lambda: versioning.track_raw(config)) if config.data.dvc.track else None
    if track is not None:
        versioning.find_repo_root(config)
    work_dir = config.data.ingest.work_dir
    with exclusive(work_dir / LOCK_FILE, "ingest", error=IngestBusy):
        commit.require_store_ready(config)
        recovered = commit.recover(config)
        paths, skipped = _resolve_drops(config, drops)
        if allow_new_classes is None:
            allow_new_classes = config.data.ingest.allow_new_classes
        with _Ingestor(
            config,
            allow_new_classes=allow_new_classes,
            progress=progress,
            checks=checks,
            accept_label_issues=accept_label_issues,
        ) as ingestor:
            outcomes = [ingestor.run_drop(path) for path in paths]
        for outcome in outcomes:
            _log_outcome(outcome)
        tracked = commit.track_if_pending(config, track)
        class_version, classes = raw_store.read_classes(config.data.raw_dir)
        images = ingestor.images
        if images is None:  # no drop committed in this run: count the manifest's rows
            images = raw_store.count_images(config.data.raw_dir)
    return IngestResult(outcomes, recovered, skipped, images, class_version, classes, tracked)


def _log_outcome(drop: DropOutcome) -> None:
    """One line per drop for whoever listens (the Prefect flow-run log).

    Info, not warning, even for a held or rejected drop: the CLI prints its own
    line for it, and an unhandled warning would reach the terminal a second time.
    """
    counts = (
        f"files in {drop.files} = accepted {drop.accepted} + duplicates {drop.duplicates} "
        f"+ quarantined {drop.quarantined_total}"
    )
    if drop.needs_attention:
        why = drop.reason or ""
        if drop.new_classes:
            why = f"new classes {drop.new_classes}"
        if drop.detail:
            why = f"{why}: {drop.detail}" if why else drop.detail
        log.info("drop %s %s (%s); %s", drop.name, drop.status, why or "no reason given", counts)
    else:
        log.info("drop %s %s as %s: %s", drop.name, drop.status, drop.drop_id, counts)


def _resolve_drops(config: Config, drops: Iterable[str | Path] | None) -> tuple[list[Path], list]:
    if drops is None:
        return pending_drops(config)
    resolved = []
    for drop in drops:
        path = Path(drop)
        if not path.exists():
            path = config.data.incoming_dir / drop
        if not path.exists():
            raise VisionloopError(
                f"no drop '{drop}': not a path and not in {config.data.incoming_dir}; "
                f"run `visionloop data ingest` with no argument to take every pending drop"
            )
        resolved.append(path)
    return resolved, []


class _Ingestor:
    """Runs drops one after another against the stored state, under the ingest lock."""

    def __init__(
        self,
        config: Config,
        *,
        allow_new_classes: bool,
        progress: bool,
        checks: DropChecks | None = None,
        accept_label_issues: bool = False,
    ) -> None:
        self.config = config
        self.checks = checks
        self.accept_label_issues = accept_label_issues
        self.rules = config.data.ingest
        self.allow_new_classes = allow_new_classes
        self.progress = progress
        workers = self.rules.workers or min(8, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="screen")
        # files decoded ahead: bounds memory on big drops
        self.stager = Stager(self.rules, self.pool, window=workers * 4)
        self.images: int | None = None  # rows in the manifest after the last commit

    def __enter__(self) -> _Ingestor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run_drop(self, path: Path) -> DropOutcome:
        try:
            reader = DropReader(path, self.rules.limits)
            entries = lay_out(reader.files, self.rules.label_pattern)
        except DropRejected as exc:
            return self._reject(path, exc)
        stage = commit.new_stage_dir(self.rules.work_dir)
        try:
            outcome = self._stage_and_commit(path, reader, entries, stage)
        except DropRejected as exc:  # damage found while reading an archive
            shutil.rmtree(stage, ignore_errors=True)
            return self._reject(path, exc)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        outcome.empty_folders = reader.empty_folders()
        if outcome.empty_folders:
            log.info(
                "drop %s: empty folders %s hold no images (nothing to ingest from them)",
                outcome.name,
                outcome.empty_folders,
            )
        return outcome

    def _stage_and_commit(
        self, path: Path, reader: DropReader, entries: list[DropEntry], stage: Path
    ) -> DropOutcome:
        raw_dir = self.config.data.raw_dir
        state = raw_store.load_state(raw_dir)
        self.stager.screen_into(reader, entries, stage, state.labels, self.progress)
        content_sha = content_hash(entries)
        previous = state.drop_by_content(content_sha)
        if previous is not None:
            shutil.rmtree(stage)
            return self._already_ingested(path, entries, previous)
        decisions = decide(entries, state, raw_dir, stage)
        accepted = {e.label for e in entries if e.outcome == FileOutcome.ACCEPTED}
        new_classes = sorted(accepted - {*state.classes})
        if new_classes and state.classes and not self.allow_new_classes:
            shutil.rmtree(stage)
            return DropOutcome(
                drop_name(path),
                str(path),
                DropStatus.HELD,
                content_sha[:16],
                len(entries),
                new_classes=new_classes,
            )
        report = self._check(path, content_sha[:16], entries, stage)
        if self._holds_for_labels(report):
            shutil.rmtree(stage)
            return DropOutcome(
                drop_name(path),
                str(path),
                DropStatus.HELD,
                content_sha[:16],
                len(entries),
                reason=HELD_FOR_LABELS,
                detail=report["hold_reason"],
                checks=report,
            )
        plan = build_plan(self.config, path, reader.kind, entries, state, decisions, content_sha)
        write_stage_files(stage, plan, entries)
        commit.roll_forward(self.config, commit.seal(stage, plan))
        # counted, not read back: the manifest is the one file that grows with the store
        self.images = len(state.labels) + len(plan.add_rows) - len(plan.remove)
        outcome = _ingested(path, plan)
        outcome.checks = report
        return outcome

    def _check(
        self, path: Path, drop_id: str, entries: list[DropEntry], stage: Path
    ) -> dict[str, Any]:
        if self.checks is None:
            return {}
        images, seen = [], set()
        for entry in entries:
            if entry.outcome == FileOutcome.ACCEPTED and entry.sha256 not in seen:
                seen.add(entry.sha256)
                staged = stage / staged_image(entry.verdict)
                images.append(StagedImage(entry.sha256, entry.label, staged))
        return self.checks(drop_name(path), drop_id, images)

    def _holds_for_labels(self, report: dict[str, Any]) -> bool:
        if self.rules.label_issues != "hold" or self.accept_label_issues:
            return False
        return bool(report.get("hold_reason"))

    def _in_incoming(self, path: Path) -> bool:
        return path.parent.resolve() == self.config.data.incoming_dir.resolve()

    def _already_ingested(
        self, path: Path, entries: list[DropEntry], previous: dict[str, Any]
    ) -> DropOutcome:
        moved = None
        if self._in_incoming(path):
            moved = commit.move_aside(path, self.rules.done_dir / path.name, previous["drop_id"])
        return DropOutcome(
            drop_name(path),
            str(path),
            DropStatus.ALREADY_INGESTED,
            previous["drop_id"],
            len(entries),
            detail=f"same content as drop '{previous['name']}' ingested {previous['ingested_at']}",
            moved_to=str(moved or ""),
        )

    def _reject(self, path: Path, exc: DropRejected) -> DropOutcome:
        name = drop_name(path)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.config.data.quarantine_dir / f"{name}-rejected-{stamp}"
        in_incoming = self._in_incoming(path)
        reasons = {
            "drop": name,
            "source": str(path),
            "rejected_at": stamp,
            "whole_drop": True,
            "reason": str(exc.reason),
            "description": DROP_REASONS[exc.reason],
            "detail": exc.detail,
            "moved": in_incoming,
        }
        target.mkdir(parents=True, exist_ok=True)
        write_json_atomic(target / QUARANTINE_REASONS, reasons)
        moved = commit.move_aside(path, target / path.name, "drop") if in_incoming else None
        return DropOutcome(
            name,
            str(path),
            DropStatus.REJECTED,
            reason=str(exc.reason),
            detail=exc.detail,
            quarantine_path=str(target),
            moved_to=str(moved or ""),
        )


def _ingested(path: Path, plan: CommitPlan) -> DropOutcome:
    counts = plan.ledger_entry
    quarantined = counts["quarantined"]
    return DropOutcome(
        plan.name,
        str(path),
        DropStatus.INGESTED,
        plan.drop_id,
        counts["files"],
        counts["accepted"],
        counts["duplicates"],
        quarantined,
        counts["new_classes"],
        quarantine_path=plan.quarantine_target if quarantined else "",
        report_path=plan.report_target,
        moved_to=plan.done_path or "",
    )
