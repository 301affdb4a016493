"""Committing a staged drop: a journal that is rolled forward until the drop is fully in.

A drop is staged in `<work_dir>/stage-*` (its accepted images, its quarantined files, its
report). When staging is complete the plan is written into it and the folder is renamed
to `<work_dir>/commit-<drop_id>`: that rename is the decision. From then on every step
below is idempotent, and `recover()` (run first by every ingest) redoes them all for any
commit folder it finds, so a process killed at any point leaves the drop either absent
(a stage folder, simply deleted) or committed once the next ingest runs.

Order of the steps: images into the store (invisible until listed), copies of stored
images being quarantined, classes.json, manifest.csv (the atomic replace consumers see),
drops.json, removal of the quarantined stored images, quarantine folder, report, DVC, the
drop moved aside, the commit folder deleted. `dvc add` runs once per ingest run, after
the last commit, and again on the next run if it did not finish (TRACK_PENDING).
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path

from visionloop.artifacts import raw_store
from visionloop.atomic import write_json_atomic
from visionloop.config import Config
from visionloop.data.ingest.plan import REPORT_FILE, CommitPlan

PLAN = "plan.json"
STAGE_PREFIX = "stage-"
COMMIT_PREFIX = "commit-"
KILL_ENV = "VISIONLOOP_INGEST_KILL_AT"  # test hook: SIGKILL this process at a named point
# Present while data/raw has changed since DVC last recorded it; removed after `dvc add`.
TRACK_PENDING = "track-pending"


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


def recover(config: Config) -> list[str]:
    """Finish every sealed commit, drop every unsealed stage; the drop ids finished."""
    work_dir = config.data.ingest.work_dir
    raw_store.remove_stale_temp_files_in(config.data.raw_dir)
    if not work_dir.is_dir():
        return []
    finished = []
    for entry in sorted(work_dir.iterdir()):
        if entry.name.startswith(STAGE_PREFIX):
            shutil.rmtree(entry)
        elif entry.name.startswith(COMMIT_PREFIX) and (entry / PLAN).is_file():
            finished.append(roll_forward(config, entry))
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
    _move_images_in(commit_dir / raw_store.IMAGES, raw_dir / raw_store.IMAGES)
    failpoint("images")
    _copy_stored_into_quarantine(plan, raw_dir, commit_dir / "quarantine")
    if plan.classes is not None:
        raw_store.write_classes(raw_dir, plan.classes["version"], plan.classes["classes"])
    failpoint("classes")
    raw_store.update_manifest(raw_dir, plan.add_rows, {r["sha256"] for r in plan.remove})
    failpoint("manifest")
    _apply_ledger(raw_dir, plan)
    failpoint("ledger")
    for removed in plan.remove:
        (raw_dir / removed["path"]).unlink(missing_ok=True)
    _merge_move(commit_dir / "quarantine", Path(plan.quarantine_target))
    _merge_move(commit_dir / REPORT_FILE, Path(plan.report_target))
    failpoint("quarantine")
    if plan.done_path is not None:
        move_aside(Path(plan.source), Path(plan.done_path), plan.drop_id)
    failpoint("moved")
    shutil.rmtree(commit_dir)
    return plan.drop_id


def _move_images_in(staged: Path, images_dir: Path) -> None:
    if not staged.is_dir():
        return
    files = sorted(p for p in staged.rglob("*") if p.is_file())
    for count, path in enumerate(files, 1):
        target = images_dir / path.relative_to(staged)
        target.parent.mkdir(parents=True, exist_ok=True)
        # Content-addressed: a file already there under this name has these very bytes.
        if target.exists():
            path.unlink()
        else:
            os.replace(path, target)
        if count == len(files) // 2:
            failpoint("images_half")


def _copy_stored_into_quarantine(plan: CommitPlan, raw_dir: Path, quarantine: Path) -> None:
    for removed in plan.remove:
        source = raw_dir / removed["path"]
        target = quarantine / removed["quarantine_path"]
        if target.exists() or not source.exists():
            continue  # copied by an earlier, interrupted run
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, tmp)
        os.replace(tmp, target)


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
        os.replace(source, target)
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
    os.replace(source, candidate)
    return candidate
