"""The checks on a new drop, run by ingest before it commits: drift and label issues.

`ingest_with_checks` is what the CLI and the retrain flow call: ingest, with the champion's
view of each drop's accepted images. Each check either runs or says why it was skipped (no
champion yet, a drop too small for a test, classes the champion does not know); it never
stops an ingest. With `data.ingest.label_issues: hold` a drop whose labels look wrong waits
for a person, like a drop bringing a new class.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.artifacts import split_table
from visionloop.atomic import write_json_atomic
from visionloop.config import Config
from visionloop.data.ingest.run import IngestResult, StagedImage, ingest_drops
from visionloop.data.splits import perceptual_hash
from visionloop.errors import VisionloopError
from visionloop.monitoring import drift, labels
from visionloop.monitoring.features import Seen, embed_files
from visionloop.monitoring.reference import NoModel, Watched, champion_or_reason, reference_seen
from visionloop.monitoring.tracking import log_check


def ingest_with_checks(
    config: Config,
    drops: Iterable[str | Path] | None = None,
    *,
    allow_new_classes: bool | None = None,
    accept_label_issues: bool = False,
    progress: bool = False,
    watched: Watched | None = None,
) -> IngestResult:
    """`ingest_drops` with `DropChecks` (none when both checks are turned off)."""
    wanted = config.data.ingest.label_issues != "off" or config.monitoring.drift.enabled
    return ingest_drops(
        config,
        drops,
        allow_new_classes=allow_new_classes,
        accept_label_issues=accept_label_issues,
        progress=progress,
        checks=DropChecks(config, watched) if wanted else None,
    )


class DropChecks:
    """Called by ingest for each drop with its accepted images; loads the champion and its
    reference once, on the first drop that needs them."""

    def __init__(self, config: Config, watched: Watched | None = None) -> None:
        self.config = config
        self._watched = watched
        self._reference: Seen | None = None
        self._why_not: str | None = None

    def __call__(self, drop: str, drop_id: str, images: list[StagedImage]) -> dict[str, Any]:
        report = check_drop(self.config, drop, images, self._model_or_reason)
        report["drop_id"] = drop_id
        target = self.config.monitoring.dir / f"{drop}-{drop_id}.json"
        report["report_path"] = str(target)
        report["mlflow_run_id"] = log_check(self.config, f"drop {drop}", report)
        write_json_atomic(target, report)
        return report

    def _model_or_reason(self) -> tuple[Watched, Seen | None] | str:
        if self._why_not is not None:
            return self._why_not
        try:
            if self._watched is None:
                self._watched = champion_or_reason(self.config)
            if self._reference is None and self.config.monitoring.drift.enabled:
                self._reference = reference_seen(self.config, self._watched)
        except NoModel as exc:
            if self._watched is None:
                self._why_not = str(exc)
                return self._why_not
            return self._watched, None  # a model but no reference: labels still checked
        return self._watched, self._reference


def check_drop(config: Config, drop: str, images: list[StagedImage], model_or_reason) -> dict:
    """Drift, suspected mislabels and near-duplicate label conflicts of one drop."""
    mode = config.data.ingest.label_issues
    report: dict[str, Any] = {"drop": drop, "images": len(images), "label_issues_mode": mode}
    report["near_duplicate_conflicts"] = near_duplicate_conflicts(config, images)
    found = model_or_reason() if images else "no accepted images"
    if isinstance(found, str):
        report["model"] = None
        report["drift"] = {"skipped": found}
        report["label_issues"] = {"skipped": found}
    else:
        watched, reference = found
        report["model"] = watched.version
        seen = seen_of(watched, images)
        report["drift"] = drift_of(config, reference, seen)
        report["label_issues"] = label_issues_of(config, watched, images, seen)
    report["hold_reason"] = hold_reason(config, report)
    return report


def seen_of(watched: Watched, images: list[StagedImage]) -> Seen:
    # screening has decoded every accepted image already: none is unreadable here
    seen, _, _ = embed_files(watched.classifier, [i.path for i in images])
    return seen


def drift_of(config: Config, reference: Seen | None, seen: Seen) -> dict[str, Any]:
    rules = config.monitoring.drift
    if not rules.enabled:
        return {"skipped": "monitoring.drift.enabled is false"}
    if reference is None:
        return {"skipped": f"no prepared train split in {config.prepare.dir} to compare with"}
    if len(seen) < rules.min_images:
        return {
            "skipped": f"{len(seen)} images, fewer than monitoring.drift.min_images "
            f"({rules.min_images}) for a test"
        }
    return drift.compare(reference, seen, rules).to_dict()


def label_issues_of(
    config: Config, watched: Watched, images: list[StagedImage], seen: Seen
) -> dict[str, Any]:
    rules = config.monitoring.labels
    if config.data.ingest.label_issues == "off":
        return {"skipped": "data.ingest.label_issues is off"}
    classes = list(watched.classifier.meta.classes)
    known = [i for i, image in enumerate(images) if image.label in classes]
    unknown = sorted({image.label for image in images} - set(classes))
    result: dict[str, Any] = {"unknown_classes": unknown, "checked": len(known)}
    if len(known) < rules.min_images:
        result["skipped"] = (
            f"{len(known)} images of classes the model knows, fewer than "
            f"monitoring.labels.min_images ({rules.min_images})"
        )
        return result
    given = np.array([classes.index(images[i].label) for i in known])
    suspects = labels.find_suspects(
        seen.probs[known], given, [images[i].sha256 for i in known], classes
    )
    result["count"] = len(suspects)
    result["share"] = round(len(suspects) / len(known), 4)
    result["suspects"] = [s.to_dict() for s in suspects[: rules.listed]]
    return result


def near_duplicate_conflicts(config: Config, images: list[StagedImage]) -> list[dict]:
    if config.data.ingest.label_issues == "off":
        return []
    # decoding dominates and Pillow releases the GIL while it decodes: threads pay off
    workers = config.data.ingest.workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="phash") as pool:
        hashes = list(pool.map(perceptual_hash, [i.path for i in images]))
    new = [(i.sha256, i.label, h) for i, h in zip(images, hashes, strict=True)]
    try:
        stored_rows = split_table.read_split(config.split.dir)
    except VisionloopError:
        stored_rows = []  # no split yet: only the drop's own images are compared
    stored = [(r.sha256, r.label, int(r.phash, 16)) for r in stored_rows]
    return labels.conflicting_pairs(new, stored, config.split.near_duplicate_distance)


def hold_reason(config: Config, report: dict[str, Any]) -> str:
    """Why the drop should wait for a person under label_issues: hold ("" = it need not)."""
    issues = report["label_issues"]
    reasons = []
    share = issues.get("share", 0.0)
    if share > config.monitoring.labels.hold_share:
        reasons.append(
            f"{issues['count']} of {issues['checked']} images ({share:.1%}) look mislabelled "
            f"(above monitoring.labels.hold_share {config.monitoring.labels.hold_share:.1%})"
        )
    pairs = report["near_duplicate_conflicts"]
    if pairs:
        reasons.append(f"{len(pairs)} near-duplicate pairs carry two labels")
    return "; ".join(reasons)
