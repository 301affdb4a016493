"""What to label next: the unlabelled images the model is least sure of, spread out.

1. Uncertainty of each image from the model's probabilities: `margin` (1 - (top-1 - top-2))
   or normalised `entropy`.
2. Candidates: the `pool_factor x budget` most uncertain images.
3. Diversity: k-center greedy on the penultimate-layer embeddings picks `budget` of them,
   each the candidate farthest from those already picked (starting from the most uncertain),
   so near-identical uncertain images are not all sent to a person.

The result is a folder: the chosen images (original bytes, ranked names) and `to-label.csv`.
Sorted into class folders by a person, they come back as an ordinary drop.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from visionloop.artifacts.prediction_log import image_path, read_predictions
from visionloop.atomic import staged_dir
from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.monitoring.features import embed_files
from visionloop.monitoring.reference import Watched

CSV_NAME = "to-label.csv"
CSV_COLUMNS = (
    "rank",
    "file",
    "source",
    "sha256",
    "predicted",
    "confidence",
    "margin",
    "entropy",
)
IMAGE_FOLDER = "images"
SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
PREDICTION_LOG = "prediction-log"


def uncertainty(probs: np.ndarray, kind: str) -> np.ndarray:
    """Higher = less sure, in 0..1."""
    if kind == "entropy":
        clipped = np.clip(probs, 1e-12, 1.0)
        return -(clipped * np.log(clipped)).sum(axis=1) / math.log(max(2, probs.shape[1]))
    top = np.sort(probs, axis=1)[:, ::-1]
    second = top[:, 1] if probs.shape[1] > 1 else np.zeros(len(probs))
    return 1.0 - (top[:, 0] - second)


def k_center_greedy(points: np.ndarray, budget: int, first: int = 0) -> list[int]:
    """`budget` indices of `points`, each the farthest from those picked before it."""
    if len(points) == 0 or budget <= 0:
        return []
    picked = [first]
    nearest = np.linalg.norm(points - points[first], axis=1)
    nearest[first] = -1.0  # never picked twice, even among identical points
    while len(picked) < min(budget, len(points)):
        chosen = int(np.argmax(nearest))
        picked.append(chosen)
        nearest = np.minimum(nearest, np.linalg.norm(points - points[chosen], axis=1))
        nearest[chosen] = -1.0
    return picked


def rank_for_labelling(
    probs: np.ndarray, embeddings: np.ndarray, budget: int, kind: str, pool_factor: float
) -> list[int]:
    """Indices to label, in the order k-center greedy picked them."""
    scores = uncertainty(probs, kind)
    pool_size = min(len(scores), max(budget, math.ceil(pool_factor * budget)))
    pool = np.argsort(-scores, kind="stable")[:pool_size]
    return [int(pool[i]) for i in k_center_greedy(embeddings[pool], budget, first=0)]


@dataclass(frozen=True)
class Candidate:
    source: str  # as given: the file, or the prediction log's stored image
    path: Path  # read when decoded and when copied, never held in memory


def candidates_from(config: Config, source: str) -> tuple[list[Candidate], list[str]]:
    """The images to choose among, and one line per file left out (why)."""
    if source == PREDICTION_LOG:
        return _from_prediction_log(config)
    folder = Path(source)
    if not folder.is_dir():
        raise VisionloopError(
            f"--from {source}: not a folder; give a folder of images or `{PREDICTION_LOG}`"
        )
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    chosen = [Candidate(str(p), p) for p in files if p.suffix.lower() in SUFFIXES]
    left = [f"{p}: not an image file name" for p in files if p.suffix.lower() not in SUFFIXES]
    return chosen, left


def _from_prediction_log(config: Config) -> tuple[list[Candidate], list[str]]:
    seen, chosen, left = set(), [], []
    for record in read_predictions(config.serving.prediction_log):
        sha = record.get("sha256")
        if sha in seen:
            continue
        seen.add(sha)
        path = image_path(config.serving.image_store, sha, record.get("format") or "")
        if record.get("stored") and path.is_file():
            chosen.append(Candidate(str(path), path))
    if not chosen:
        raise VisionloopError(
            f"no stored images in {config.serving.image_store}: the prediction log keeps "
            "images only with serving.keep_images: true"
        )
    return chosen, left


def select_to_label(
    config: Config, watched: Watched, source: str, budget: int, out_dir: Path | None = None
) -> dict:
    """Choose `budget` images from `source` and write them with to-label.csv; a summary."""
    rules = config.monitoring.select
    candidates, left = candidates_from(config, source)
    meta = watched.classifier.meta
    seen, readable, unreadable = embed_files(watched.classifier, [c.path for c in candidates])
    kept = [candidates[i] for i in readable]
    left += unreadable
    if not kept:
        raise VisionloopError(f"--from {source}: no readable images to choose from")
    order = rank_for_labelling(
        seen.probs, seen.embeddings, budget, rules.uncertainty, rules.pool_factor
    )
    target = _new_folder(out_dir or rules.out_dir)
    rows = _write_selection(target, order, kept, seen.probs, meta.classes)
    return {
        "folder": str(target),
        "csv": str(target / CSV_NAME),
        "candidates": len(kept),
        "selected": len(rows),
        "left_out": left,
        "model": watched.version,
    }


def _new_folder(parent: Path) -> Path:
    """<parent>/<UTC time>, never an earlier selection's folder (it is the user's work)."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    target, number = parent / stamp, 1
    while target.exists():
        number += 1
        target = parent / f"{stamp}-{number}"
    return target


def _write_selection(target: Path, order, kept, probs, classes) -> list[dict]:
    margins = uncertainty(probs, "margin")
    entropies = uncertainty(probs, "entropy")
    rows = []
    with staged_dir(target) as staging:
        (staging / IMAGE_FOLDER).mkdir()
        for rank, index in enumerate(order, 1):
            candidate = kept[index]
            data = candidate.path.read_bytes()
            sha = hashlib.sha256(data).hexdigest()
            suffix = candidate.path.suffix.lower() or ".img"
            name = f"{IMAGE_FOLDER}/{rank:04d}-{sha[:12]}{suffix}"
            (staging / name).write_bytes(data)
            rows.append(
                {
                    "rank": rank,
                    "file": name,
                    "source": candidate.source,
                    "sha256": sha,
                    "predicted": classes[int(probs[index].argmax())],
                    "confidence": round(float(probs[index].max()), 4),
                    "margin": round(float(1 - margins[index]), 4),
                    "entropy": round(float(entropies[index]), 4),
                }
            )
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
        (staging / CSV_NAME).write_text(buffer.getvalue(), encoding="utf-8")
    return rows
