"""Run a pipeline stage the way `dvc repro` would, from inside another program.

The Prefect flow calls each stage function in its own process (so logs and errors stay in
the flow run) and then records it with `dvc commit`, which writes the same dvc.lock entry and
fills the same DVC cache as `dvc repro`. A stage whose deps, params and outs are
unchanged is skipped, as DVC would skip it. Outside a DVC project every stage just runs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionloop.config import Config
from visionloop.data.versioning import is_dvc_project, open_repo
from visionloop.pipeline.stages import STAGES, run_stage


@dataclass(frozen=True)
class StageOutcome:
    name: str
    ran: bool
    seconds: float  # the stage function's own time; 0 when skipped
    summary: dict[str, Any] = field(default_factory=dict)
    reason: str = ""
    dvc_seconds: float = 0.0  # DVC's status before, and commit after: the bookkeeping


def pipeline_order() -> list[str]:
    return list(STAGES)


def reproduce_stage(config: Config, name: str) -> StageOutcome:
    """Run stage `name` if DVC says it changed (always outside DVC), then record it."""
    started = time.perf_counter()
    changes = _dvc_changes(config.root, name)
    dvc_seconds = time.perf_counter() - started
    if changes == {}:
        return StageOutcome(
            name,
            ran=False,
            seconds=0.0,
            reason="unchanged, as dvc repro sees it",
            dvc_seconds=dvc_seconds,
        )
    started = time.perf_counter()
    summary = run_stage(name, config)
    seconds = time.perf_counter() - started
    if changes is not None:
        started = time.perf_counter()
        _dvc_commit(config.root, name)
        dvc_seconds += time.perf_counter() - started
    return StageOutcome(
        name,
        ran=True,
        seconds=seconds,
        summary=summary,
        reason=_why(changes),
        dvc_seconds=dvc_seconds,
    )


def _dvc_changes(root: Path, name: str) -> dict[str, Any] | None:
    """DVC's status of one stage ({} when up to date), or None outside a DVC project."""
    if not is_dvc_project(root):
        return None
    with open_repo(root) as repo:
        return repo.status(targets=[name], with_deps=False)


def _dvc_commit(root: Path, name: str) -> None:
    with open_repo(root) as repo:
        repo.commit(name, force=True)


def _why(changes: dict[str, Any] | None) -> str:
    if changes is None:
        return "not a DVC project: always runs"
    return f"changed: {changes}"
