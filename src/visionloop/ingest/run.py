"""`visionloop data ingest`: take drops in, each one whole or not at all.

For each drop: pre-scan it (readers), screen every file (screening), decide duplicates,
label conflicts and new classes against what is stored, stage the result, seal it and
commit it (commit). Every file ends up accepted, a duplicate, or quarantined with a reason.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import unicodedata
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.ingest import commit, store
from visionloop.ingest.readers import DropFile, DropReader, DropRejected, drop_name, is_os_metadata
from visionloop.ingest.reasons import DROP_REASONS, DropReason, FileReason
from visionloop.ingest.screening import Screened, screen

# Names that mean "still arriving": skipped, looked at again on the next run.
INCOMPLETE_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".download", ".uploading")
LOCK_FILE = "ingest.lock"


class IngestBusy(VisionloopError):
    """Another ingest holds the lock."""


@dataclass
class DropOutcome:
    """What happened to one drop. status: ingested, already_ingested, rejected or held."""

    name: str
    path: str
    status: str
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

    @property
    def quarantined_total(self) -> int:
        return sum(self.quarantined.values())

    def problem(self) -> str:
        """One sentence for a rejected or held drop: which, why, where, what to do."""
        name = Path(self.path).name
        if self.status == "rejected":
            where = f"moved to {self.quarantine_path}" if self.moved_to else "left in place"
            return (
                f"drop '{name}' rejected ({self.reason}: {self.detail}); {where}, "
                f"reasons in reasons.json; fix it and put it back in the incoming folder"
            )
        if self.status == "held":
            return (
                f"drop '{name}' held: new classes {self.new_classes} are not in the class "
                f"map; rename those folders to known classes, or accept them with "
                f"`visionloop data ingest --allow-new-classes` "
                f"(or data.ingest.allow_new_classes: true)"
            )
        return ""


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
        return [d for d in self.drops if d.status in ("rejected", "held")]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _File:
    """One file of a drop on its way through screening."""

    source: DropFile
    parts: tuple[str, ...]  # after unwrapping a single top folder
    label: str | None
    verdict: Screened | None = None
    reason: FileReason | None = None
    detail: str = ""
    outcome: str = ""  # accepted, duplicate, quarantined

    @property
    def sha256(self) -> str:
        return self.verdict.sha256 if self.verdict else ""


def ingest_drops(
    config: Config,
    drops: Iterable[str | Path] | None = None,
    *,
    allow_new_classes: bool | None = None,
    progress: bool = False,
) -> IngestResult:
    """Ingest the given drops (names in data.incoming_dir or paths), or every pending one."""
    from visionloop.ingest import dvc_tracking

    track = (lambda: dvc_tracking.track_raw(config)) if config.data.dvc.track else None
    if track is not None:
        dvc_tracking.find_repo_root(config)
    with _exclusive(config.data.ingest.work_dir):
        recovered = commit.recover(config)
        paths, skipped = _resolve_drops(config, drops)
        if allow_new_classes is None:
            allow_new_classes = config.data.ingest.allow_new_classes
        ingestor = _Ingestor(config, allow_new_classes=allow_new_classes, progress=progress)
        with ingestor:
            outcomes = [ingestor.run_drop(path) for path in paths]
        tracked = commit.track_if_pending(config, track)
        class_version, classes = store.read_classes(config.data.raw_dir)
        images = store.count_images(config.data.raw_dir)
    return IngestResult(outcomes, recovered, skipped, images, class_version, classes, tracked)


@contextmanager
def _exclusive(work_dir: Path) -> Iterator[None]:
    from filelock import FileLock, Timeout

    work_dir.mkdir(parents=True, exist_ok=True)
    lock = FileLock(work_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise IngestBusy(
            f"another ingest is running (lock {work_dir / LOCK_FILE}); wait for it to finish"
        ) from None
    try:
        yield
    finally:
        lock.release()


def pending_drops(config: Config) -> tuple[list[Path], list[str]]:
    """Drops waiting in data.incoming_dir, oldest name first, and the names skipped."""
    incoming = config.data.incoming_dir
    if not incoming.is_dir():
        return [], []
    drops, skipped = [], []
    for entry in sorted(incoming.iterdir()):
        if entry.name.startswith("."):
            continue  # hidden: the done folder, half-written demo drops, editor files
        if entry.name.lower().endswith(INCOMPLETE_SUFFIXES):
            skipped.append(entry.name)
        else:
            drops.append(entry)
    return drops, skipped


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

    def __init__(self, config: Config, *, allow_new_classes: bool, progress: bool) -> None:
        self.config = config
        self.rules = config.data.ingest
        self.allow_new_classes = allow_new_classes
        self.progress = progress
        workers = self.rules.workers or min(8, os.cpu_count() or 1)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="screen")
        self.window = workers * 4  # files decoded ahead: bounds memory on big drops

    def __enter__(self) -> _Ingestor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def run_drop(self, path: Path) -> DropOutcome:
        name = drop_name(path)
        try:
            reader = DropReader(path, self.rules.limits)
            files = self._layout(reader.files)
        except DropRejected as exc:
            return self._reject(path, name, exc)
        stage = commit.new_stage_dir(self.rules.work_dir)
        try:
            return self._stage_and_commit(path, name, reader, files, stage)
        except DropRejected as exc:  # damage found while reading an archive
            shutil.rmtree(stage, ignore_errors=True)
            return self._reject(path, name, exc)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise

    # -- layout -----------------------------------------------------------------------------

    def _layout(self, drop_files: list[DropFile]) -> list[_File]:
        """Unwrap one enclosing folder, find each file's label, refuse unsafe label names."""
        content = [f.parts for f in drop_files if not is_os_metadata(f.parts)]
        single_top = len({p[0] for p in content}) == 1
        strip = 1 if content and single_top and all(len(p) >= 3 for p in content) else 0
        files = []
        for source in drop_files:
            parts = source.parts if is_os_metadata(source.parts) else source.parts[strip:]
            label = parts[0] if len(parts) == 2 and not is_os_metadata(parts) else None
            files.append(_File(source, parts, label))
        pattern = re.compile(self.rules.label_pattern)
        for label in sorted({f.label for f in files if f.label is not None}):
            if not pattern.fullmatch(label):
                raise DropRejected(
                    DropReason.BAD_LABEL,
                    f"class folder {label!r} does not match data.ingest.label_pattern",
                )
        return files

    # -- staging ----------------------------------------------------------------------------

    def _stage_and_commit(
        self, path: Path, name: str, reader: DropReader, files: list[_File], stage: Path
    ) -> DropOutcome:
        state = store.load_state(self.config.data.raw_dir)
        stored = state.labels
        self._screen_into(reader, files, stage, stored)
        content_sha = _content_hash(files)
        drop_id = content_sha[:16]
        previous = state.drop_by_content(content_sha)
        if previous is not None:
            shutil.rmtree(stage)
            return self._already_ingested(path, name, files, previous)
        removals, conflicts = self._decide(files, state, stored, stage)
        new_classes = sorted({f.label for f in files if f.outcome == "accepted"} - {*state.classes})
        if new_classes and state.classes and not self.allow_new_classes:
            shutil.rmtree(stage)
            held = DropOutcome(name, str(path), "held", drop_id, len(files))
            held.new_classes = new_classes
            return held
        plan = self._plan(path, name, drop_id, content_sha, reader.kind, files, state)
        plan.update(remove=removals, new_conflicts=conflicts)
        self._write_quarantine_reasons(stage, plan, files, removals)
        store.write_json(stage / "report.json", _report(plan, files))
        commit.roll_forward(self.config, commit.seal(stage, plan))
        return self._ingested_outcome(path, name, plan)

    def _screen_into(
        self, reader: DropReader, files: list[_File], stage: Path, stored: dict[str, str]
    ) -> None:
        by_source = {id(f.source): f for f in files}
        pending: deque[tuple[_File, bytes | None, Future | None]] = deque()
        too_large = []
        for count, (source, data, why) in enumerate(self._read(reader), 1):
            item = by_source[id(source)]
            if data is None:
                self._unread(item, why)
                too_large += [item] if item.reason == FileReason.FILE_TOO_LARGE else []
                continue
            job = self.pool.submit(screen, data, self.rules) if self._wants_screen(item) else None
            pending.append((item, data, job))
            while len(pending) > self.window:
                self._finish(*pending.popleft(), stage, stored)
            if count == len(files) // 2:
                commit.failpoint("staging")
        while pending:
            self._finish(*pending.popleft(), stage, stored)
        for item in too_large:
            reader.copy_file(item.source, _quarantine_file(stage, item))

    def _read(self, reader: DropReader) -> Iterator[tuple[DropFile, bytes | None, str]]:
        stream = reader.read_all(self.rules.max_file_bytes)
        if not self.progress:
            return stream
        from tqdm import tqdm

        return tqdm(
            stream,
            total=len(reader.files),
            desc=drop_name(reader.path),
            unit="file",
            disable=None,
            leave=False,
        )

    @staticmethod
    def _unread(item: _File, why: str) -> None:
        if why == "file_too_large":
            item.reason, item.detail = FileReason.FILE_TOO_LARGE, f"{item.source.size} bytes"
        else:
            item.reason, item.detail = FileReason.UNREADABLE, why
        item.verdict = Screened("", item.reason)

    @staticmethod
    def _wants_screen(item: _File) -> bool:
        return item.label is not None

    def _finish(
        self, item: _File, data: bytes | None, job: Future | None, stage: Path, stored: dict
    ) -> None:
        if job is None:
            item.verdict = Screened(hashlib.sha256(data or b"").hexdigest(), None)
            item.reason, item.detail = _placement_reason(item)
        else:
            item.verdict = job.result()
            item.reason, item.detail = item.verdict.reason, item.verdict.detail
        if item.reason is not None:
            _write_new(_quarantine_file(stage, item), data or b"")
        elif item.sha256 not in stored:
            _write_new(stage / _staged_image(item.verdict), data or b"")

    # -- decisions --------------------------------------------------------------------------

    def _decide(
        self, files: list[_File], state: store.RawState, stored: dict[str, str], stage: Path
    ) -> tuple[list[dict[str, str]], dict[str, list[str]]]:
        """Mark each image accepted, duplicate or label_conflict.

        Returns the stored images to take out (a new copy conflicts with them) and the
        conflicting sha256s with every label they came with.
        """
        copies: dict[str, list[_File]] = defaultdict(list)
        # In path order, so which copy is kept does not depend on the container's order.
        for item in sorted(files, key=lambda f: f.parts):
            if item.reason is None:
                copies[item.sha256].append(item)
            else:
                item.outcome = "quarantined"
        removals, conflicts = [], {}
        for sha, group in copies.items():
            labels = {f.label for f in group} | set(state.conflicts.get(sha, []))
            labels |= {stored[sha]} if sha in stored else set()
            if len(labels) > 1:
                conflicts[sha] = sorted(labels)
                self._quarantine_conflict(group, conflicts[sha], stage)
                if sha in stored:
                    removals.append(_removal(store.stored_row(self.config.data.raw_dir, sha)))
                continue
            for number, item in enumerate(group):
                item.outcome = "accepted" if number == 0 and sha not in stored else "duplicate"
        return removals, conflicts

    @staticmethod
    def _quarantine_conflict(group: list[_File], labels: list[str], stage: Path) -> None:
        staged = stage / _staged_image(group[0].verdict)
        for item in group:
            item.reason, item.outcome = FileReason.LABEL_CONFLICT, "quarantined"
            item.detail = f"the same bytes are labelled {labels}"
            if staged.exists():
                target = _quarantine_file(stage, item)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(staged, target)
        staged.unlink(missing_ok=True)

    def _plan(
        self,
        path: Path,
        name: str,
        drop_id: str,
        content_sha: str,
        kind: str,
        files: list[_File],
        state: store.RawState,
    ) -> dict[str, Any]:
        now = datetime.now(UTC).isoformat(timespec="seconds")
        accepted = sorted((f for f in files if f.outcome == "accepted"), key=lambda f: f.parts)
        new_classes = sorted({f.label for f in accepted} - set(state.classes))
        classes = None
        if new_classes:
            classes = {"version": state.class_version + 1, "classes": state.classes + new_classes}
        counts = _counts(files)
        in_incoming = path.parent.resolve() == self.config.data.incoming_dir.resolve()
        return {
            "drop_id": drop_id,
            "name": name,
            "content_sha256": content_sha,
            "source": str(path),
            "done_path": str(self.rules.done_dir / path.name) if in_incoming else None,
            "add_rows": [_row(f, drop_id, now) for f in accepted],
            "remove": [],
            "classes": classes,
            "new_conflicts": {},
            "ledger_entry": {
                "drop_id": drop_id,
                "name": name,
                "content_sha256": content_sha,
                "kind": kind,
                "ingested_at": now,
                **counts,
                "new_classes": new_classes,
                "class_map_version": (classes or {"version": state.class_version})["version"],
            },
            "quarantine_target": str(self.config.data.quarantine_dir / f"{name}-{drop_id}"),
            "report_target": str(self.rules.report_dir / f"{name}-{drop_id}.json"),
        }

    # -- outcomes ---------------------------------------------------------------------------

    @staticmethod
    def _ingested_outcome(path: Path, name: str, plan: dict[str, Any]) -> DropOutcome:
        counts = plan["ledger_entry"]
        quarantined = counts["quarantined"]
        return DropOutcome(
            name,
            str(path),
            "ingested",
            plan["drop_id"],
            counts["files"],
            counts["accepted"],
            counts["duplicates"],
            quarantined,
            counts["new_classes"],
            quarantine_path=plan["quarantine_target"] if quarantined else "",
            report_path=plan["report_target"],
            moved_to=plan["done_path"] or "",
        )

    def _already_ingested(
        self, path: Path, name: str, files: list[_File], previous: dict[str, Any]
    ) -> DropOutcome:
        moved = None
        if path.parent.resolve() == self.config.data.incoming_dir.resolve():
            moved = commit.move_aside(path, self.rules.done_dir / path.name, previous["drop_id"])
        return DropOutcome(
            name,
            str(path),
            "already_ingested",
            previous["drop_id"],
            len(files),
            detail=f"same content as drop '{previous['name']}' ingested {previous['ingested_at']}",
            moved_to=str(moved or ""),
        )

    def _reject(self, path: Path, name: str, exc: DropRejected) -> DropOutcome:
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        target = self.config.data.quarantine_dir / f"{name}-rejected-{stamp}"
        in_incoming = path.parent.resolve() == self.config.data.incoming_dir.resolve()
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
        store.write_json(target / "reasons.json", reasons)
        moved = commit.move_aside(path, target / path.name, "drop") if in_incoming else None
        return DropOutcome(
            name,
            str(path),
            "rejected",
            reason=str(exc.reason),
            detail=exc.detail,
            quarantine_path=str(target),
            moved_to=str(moved or ""),
        )

    def _write_quarantine_reasons(
        self, stage: Path, plan: dict[str, Any], files: list[_File], removals: list[dict]
    ) -> None:
        rejected = [f for f in files if f.outcome == "quarantined"]
        if not rejected and not removals:
            return
        store.write_json(
            stage / "quarantine" / "reasons.json",
            {
                "drop": plan["name"],
                "drop_id": plan["drop_id"],
                "source": plan["source"],
                "quarantined_at": plan["ledger_entry"]["ingested_at"],
                "whole_drop": False,
                "files": [
                    {
                        "path": f"files/{f.source.relpath}",
                        "reason": str(f.reason),
                        "detail": f.detail,
                        "sha256": f.sha256,
                        "copied": f.reason != FileReason.UNREADABLE,
                    }
                    for f in rejected
                ],
                "removed_from_store": removals,
            },
        )


def _placement_reason(item: _File) -> tuple[FileReason, str]:
    if is_os_metadata(item.source.parts):
        return FileReason.OS_METADATA, "not part of the data"
    if len(item.parts) == 1:
        return FileReason.NO_LABEL, "files must sit inside a class folder"
    return FileReason.TOO_DEEP, f"nested below class folder '{item.parts[0]}'"


def _staged_image(verdict: Screened) -> str:
    return store.image_relpath(verdict.sha256, verdict.extension)


def _quarantine_file(stage: Path, item: _File) -> Path:
    return stage / "quarantine" / "files" / item.source.relpath


def _write_new(path: Path, data: bytes) -> None:
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def _removal(row: dict[str, str]) -> dict[str, str]:
    sha, label, path = row["sha256"], row["label"], row["path"]
    ext = path.rsplit(".", 1)[-1]
    return {
        "sha256": sha,
        "label": label,
        "path": path,
        "quarantine_path": f"stored/{label}/{sha}.{ext}",
    }


def _counts(files: list[_File]) -> dict[str, Any]:
    outcomes = Counter(f.outcome for f in files)
    reasons = Counter(str(f.reason) for f in files if f.outcome == "quarantined")
    return {
        "files": len(files),
        "accepted": outcomes["accepted"],
        "duplicates": outcomes["duplicate"],
        "quarantined": dict(sorted(reasons.items())),
    }


def _content_hash(files: list[_File]) -> str:
    """The drop's identity: its files' paths and contents, whatever the container."""
    lines = sorted(
        f"{'/'.join(f.parts)}\0{f.sha256 or f.source.size}\n"
        for f in files
        if not is_os_metadata(f.source.parts)
    )
    return hashlib.sha256("".join(lines).encode("utf-8", "surrogateescape")).hexdigest()


def _row(item: _File, drop_id: str, now: str) -> dict[str, str]:
    verdict = item.verdict
    assert verdict is not None and item.label is not None
    return {
        "sha256": verdict.sha256,
        "label": item.label,
        "source_name": printable_name(item.parts[-1]),
        "drop_id": drop_id,
        "format": verdict.format,
        "mode": verdict.mode,
        "width": str(verdict.width),
        "height": str(verdict.height),
        "frames": str(verdict.frames),
        "orientation": str(verdict.orientation),
        "normalisation": verdict.normalisation,
        "bytes": str(item.source.size),
        "path": _staged_image(verdict),
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


def _report(plan: dict[str, Any], files: list[_File]) -> dict[str, Any]:
    return {
        **plan["ledger_entry"],
        "source": plan["source"],
        "files": [
            {
                "path": f.source.relpath,
                "label": f.label,
                "sha256": f.sha256,
                "outcome": f.outcome,
                "reason": str(f.reason) if f.reason else None,
                "detail": f.detail,
            }
            for f in files
        ],
    }


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
    if drop.status == "rejected":
        return [f"{drop.name}: rejected ({drop.reason}) -> {drop.quarantine_path}/reasons.json"]
    if drop.status == "held":
        return [f"{drop.name}: held, new classes {drop.new_classes}; left in place"]
    if drop.status == "already_ingested":
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
    return lines


def to_json(result: IngestResult) -> str:
    return json.dumps(result.to_dict(), indent=2, ensure_ascii=False)


class DropsNeedAttention(VisionloopError):
    """Some drops were rejected or held; the others were ingested."""

    exit_code = 3

    def __init__(self, result: IngestResult) -> None:
        problems = result.problems()
        super().__init__(
            f"{len(problems)} of {len(result.drops)} drops need attention: "
            + "; ".join(p.problem() for p in problems)
        )
