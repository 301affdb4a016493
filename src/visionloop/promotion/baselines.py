"""Quick baselines for the first-model rule: what a model must beat before it is worth serving.

With no champion to compare with, a candidate is compared with two models anyone could
have had for free, on the same test images (so the comparison is paired):

- majority: always the most frequent class of the train split;
- logistic: scikit-learn's logistic regression on the prepared images downsampled to
  BASELINE_SIDE x BASELINE_SIDE RGB pixels (area averaging), standardised, fitted on the
  train and val splits (at most MAX_FIT_IMAGES of them, a seeded stratified draw).

They take seconds, need no tuning, and fit any dataset: a candidate that cannot beat them
significantly has learnt nothing a pixel-level linear model had not. The logistic baseline
is no SVC: on photos it is weaker (a floor, not a target); the bench/ scripts report an SVC.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from visionloop.artifacts.prepared import PreparedSplit

BASELINES = ("majority", "logistic")
BASELINE_SIDE = 16  # px: 768 features; digits keep their strokes, photos their layout
MAX_FIT_IMAGES = 5000  # bounds the fit to seconds on large sets
CHUNK = 1024  # images downsampled at a time (memory stays bounded)


@dataclass(frozen=True)
class Baseline:
    name: str
    predicted: np.ndarray  # class index per test image
    description: str


def majority(train_labels: np.ndarray, test_size: int) -> Baseline:
    counts = np.bincount(train_labels)
    winner = int(counts.argmax())
    return Baseline(
        "majority",
        np.full(test_size, winner, dtype=np.int64),
        f"always class {winner}, the largest in train ({counts[winner]} of {counts.sum()})",
    )


def logistic(fit_splits: list[PreparedSplit], test_images: np.ndarray, seed: int) -> Baseline:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    images = [split.images for split in fit_splits]
    labels = np.concatenate([split.labels for split in fit_splits])
    chosen = stratified_subset(labels, MAX_FIT_IMAGES, seed)
    features = np.concatenate([downsampled(part) for part in images])[chosen]
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500))
    model.fit(features, labels[chosen])
    return Baseline(
        "logistic",
        model.predict(downsampled(test_images)).astype(np.int64),
        f"logistic regression on {BASELINE_SIDE}x{BASELINE_SIDE} RGB pixels, "
        f"fitted on {len(chosen)} train+val images",
    )


def downsampled(images: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> float32 (N, side * side * 3) block means on 0..1."""
    import torch
    import torch.nn.functional as F

    parts = []
    for start in range(0, len(images), CHUNK):
        batch = torch.from_numpy(np.array(images[start : start + CHUNK], dtype=np.uint8))
        pooled = F.adaptive_avg_pool2d(batch.permute(0, 3, 1, 2).float() / 255, BASELINE_SIDE)
        parts.append(pooled.flatten(1).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 3 * BASELINE_SIDE**2), np.float32)


def stratified_subset(labels: np.ndarray, limit: int, seed: int) -> np.ndarray:
    """All indices when there are at most `limit`; else a seeded draw keeping class shares."""
    if len(labels) <= limit:
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    keep = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = max(1, round(limit * len(members) / len(labels)))
        keep.append(rng.choice(members, size=min(take, len(members)), replace=False))
    return np.sort(np.concatenate(keep))
