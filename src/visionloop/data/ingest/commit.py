"""Committing a staged drop: a journal that is rolled forward until the drop is fully in.

A drop is staged in `<work_dir>/stage-*` (its accepted images, its quarantined files, its
report). When staging is complete the plan is written into it and the folder is renamed
to `<work_dir>/commit-<drop_id>`: that rename is the decision. From then on every step
below is idempotent, and `recover()` (run first by every ingest) redoes them all for any
commit folder it finds, so a process killed at any point leaves the drop either absent
(a stage folder, simply deleted) or committed once the next ingest runs.

Order of the steps: the drop's shard packed into the store from the staged images (written
whole, invisible until listed), copies of stored images being quarantined, classes.json,
manifest.csv (the atomic replace consumers see), drops.json, quarantine folder, report,
the drop moved aside (copied where it crosses filesystems), the commit folder renamed
`done-*` and deleted. Shards never change: a stored image taken out for a label conflict
leaves the manifest, and its bytes stay in its shard. `dvc add`
runs once per ingest run, after the last commit, and again on the next run if it did not
finish (TRACK_PENDING).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from visionloop.artifacts import raw_store
from visionloop.atomic import move, write_bytes_atomic, write_json_atomic
from visionloop.config import Config
from visionloop.data.ingest.layout import staged_member
from visionloop.data.ingest.plan import REPORT_FILE, CommitPlan
from visionloop.errors import VisionloopError

PLAN = "plan.json"
STAGE_PREFIX = "stage-"
COMMIT_PREFIX = "commit-"
DONE_PREFIX = "done-"  # a finished commit being deleted (renamed first: no plan goes alone)
KILL_ENV = "VISIONLOOP_INGEST_KILL_AT"  # test hook: SIGKILL this process at a named point
# Present while data/raw has changed since DVC last recorded it; removed after `dvc add`.
TRACK_PENDING = "track-pending"
MIGRATION = "migrate"  # the journal of `visionloop data migrate` (ingest/migrate.py)


def failpoint(name: str) -> None:
    """Die here with SIGKILL when the kill test asks for it (a real kill, at a known point)."""
    if os.environ.get(KILL_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


def new_stage_dir(work_dir: Path) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=STAGE_PREFIX, dir=work_dir))


def seal(stage_dir: Path, plan: CommitPlan) -> Path:
    """Write the plan, then rename the stage folder: from here on the drop will be committed."""
    write_json_atomic(stage_dir / PLAN, plan.to_json())
    commit_dir = stage_dir.parent / f"{COMMIT_PREFIX}{plan.drop_id}"
    os.replace(stage_dir, commit_dir)
    failpoint("sealed")
    return commit_dir


def require_store_ready(config: Config) -> None:
    """Ingest writes shards: refuse a store still (or half) in the layout before them."""
    raw_store.require_current_layout(config.data.raw_dir)
    if (config.data.ingest.work_dir / MIGRATION).exists():
        raise VisionloopError(
            f"a migration of {config.data.raw_dir} was interrupted; run "
            "`visionloop data migrate` to finish it, then ingest"
        )


def recover(config: Config) -> list[str]:
    """Finish every sealed commit, drop every unsealed stage; the drop ids finished."""
    work_dir = config.data.ingest.work_dir
    raw_store.remove_stale_temp_files_in(config.data.raw_dir)
    if not work_dir.is_dir():
        return []
    finished = []
    for entry in sorted(work_dir.iterdir()):
        if entry.name.startswith((STAGE_PREFIX, DONE_PREFIX)):
            shutil.rmtree(entry)
        elif entry.name.startswith(COMMIT_PREFIX) and (entry / PLAN).is_file():
            finished.append(roll_forward(config, entry))
        elif entry.name.startswith(COMMIT_PREFIX) and entry.is_dir():
            # No plan: a clean-up interrupted before DONE_PREFIX existed had deleted it
            # (a plan is written before the commit folder is named, so nothing is lost).
            shutil.rmtree(entry)
    return finished


def track_if_pending(config: Config, track: Callable[[], None] | None) -> bool:
    """Record data/raw in DVC if a commit changed it since the last record (or it never was).

    True when `dvc add` ran. With tracking off the marker is simply cleared.
    """
    marker = config.data.ingest.work_dir / TRACK_PENDING
    raw_dir = config.data.raw_dir
    never_tracked = raw_dir.is_dir() and not raw_dir.with_name(f"{raw_dir.name}.dvc").exists()
    due = track is not None and (marker.exists() or never_tracked)
    if due:
        track()
        failpoint("tracked")
    marker.unlink(missing_ok=True)
    return due


def roll_forward(config: Config, commit_dir: Path) -> str:
    plan = CommitPlan.from_json(raw_store.read_json(commit_dir / PLAN, None))
    raw_dir = config.data.raw_dir
    (config.data.ingest.work_dir / TRACK_PENDING).touch()
    _pack_shard(plan, commit_dir, raw_dir)
    failpoint("images")
    _copy_stored_into_quarantine(plan, raw_dir, commit_dir / "quarantine")
    if plan.classes is not None:
        raw_store.write_classes(raw_dir, plan.classes["version"], plan.classes["classes"])
    failpoint("classes")
    raw_store.update_manifest(raw_dir, plan.add_rows, {r["sha256"] for r in plan.remove})
    failpoint("manifest")
    _apply_ledger(raw_dir, plan)
    failpoint("ledger")
    _merge_move(commit_dir / "quarantine", Path(plan.quarantine_target))
    _merge_move(commit_dir / REPORT_FILE, Path(plan.report_target))
    failpoint("quarantine")
    if plan.done_path is not None:
        move_aside(Path(plan.source), Path(plan.done_path), plan.drop_id)
    failpoint("moved")
    # Renamed before it is deleted: a kill inside rmtree leaves a done-* folder that
    # recovery removes, never a commit-* folder that has lost its plan.
    finished = commit_dir.with_name(DONE_PREFIX + commit_dir.name.removeprefix(COMMIT_PREFIX))
    os.replace(commit_dir, finished)
    failpoint("renamed_done")
    shutil.rmtree(finished)
    return plan.drop_id


def _pack_shard(plan: CommitPlan, commit_dir: Path, raw_dir: Path) -> None:
    """The drop's accepted images, in the plan's order, as one shard in the store."""
    if not plan.add_rows or all(raw_store.rows_present(raw_dir, plan.add_rows)):
        return  # nothing accepted, or written (whole) by an earlier, interrupted run
    target = raw_dir / raw_store.shard_relpath(plan.drop_id)
    raw_store.write_shard(target, _staged_images(plan, commit_dir))


def _staged_images(plan: CommitPlan, commit_dir: Path) -> Iterator[tuple[str, bytes]]:
    for count, row in enumerate(plan.add_rows, 1):
        data = (commit_dir / staged_member(row["sha256"], row["member"])).read_bytes()
        if hashlib.sha256(data).hexdigest() != row["sha256"]:
            raise raw_store.CorruptStore(
                f"{commit_dir}: the staged copy of {row['member']} changed since screening; "
                f"delete {commit_dir} and ingest the drop again"
            )
        yield row["member"], data
        if count == len(plan.add_rows) // 2:
            failpoint("images_half")


def _copy_stored_into_quarantine(plan: CommitPlan, raw_dir: Path, quarantine: Path) -> None:
    for removed in plan.remove:
        target = quarantine / removed["quarantine_path"]
        member = raw_store.member_of(removed)
        if target.exists() or not (raw_dir / member.shard).exists():
            continue  # copied by an earlier, interrupted run (or not pulled: nothing to copy)
        write_bytes_atomic(target, raw_store.read_member(raw_dir, member))


def _apply_ledger(raw_dir: Path, plan: CommitPlan) -> None:
    drops, conflicts = raw_store.read_ledger(raw_dir)
    if not any(d["drop_id"] == plan.drop_id for d in drops):
        drops.append(plan.ledger_entry)
    for sha, labels in plan.new_conflicts.items():
        conflicts[sha] = sorted(set(conflicts.get(sha, [])) | set(labels))
    raw_store.write_ledger(raw_dir, drops, conflicts)


def _merge_move(source: Path, target: Path) -> None:
    """Move a file or folder to target; a folder half-moved by an earlier run is completed."""
    if not source.exists():
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_file() or not target.exists():
        move(source, target)  # copies when target is on another filesystem
        return
    for child in sorted(source.iterdir()):
        _merge_move(child, target / child.name)
    source.rmdir()


def move_aside(source: Path, target: Path, tag: str) -> Path | None:
    """Move a drop to target (or a free name beside it); None when it is already gone."""
    if not source.exists() and not source.is_symlink():
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    candidate, number = target, 1
    while candidate.exists() or candidate.is_symlink():
        candidate = target.with_name(f"{target.name}.{tag}" + (f".{number}" if number > 1 else ""))
        number += 1
    move(source, candidate)
    return candidate
