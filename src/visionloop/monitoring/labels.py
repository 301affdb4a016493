"""Do a drop's labels agree with what the champion sees, and with each other?

- Suspected mislabels: cleanlab's `find_label_issues` (confident learning) on the champion's
  probabilities. They are out of sample, as confident learning needs: the champion never saw
  a new drop's images.
- Near-duplicate pairs with two labels: perceptual hashes (the split's pHash) within
  `split.near_duplicate_distance` bits, inside the drop and against the stored images.
  Ingest's `label_conflict` only catches identical bytes.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

# numpy has no popcount before 2.0's bitwise_count; a byte table keeps it simple and fast
_BITS = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bit differences between every uint64 in `a` (N,) and every one in `b` (M,): (N, M)."""
    xor = np.bitwise_xor(a[:, None], b[None, :])
    return _BITS[xor.view(np.uint8).reshape(*xor.shape, 8)].sum(axis=-1)


@dataclass(frozen=True)
class Suspect:
    sha256: str
    given: str
    suggested: str
    score: float  # cleanlab's label quality (self-confidence): low = likely wrong

    def to_dict(self) -> dict[str, Any]:
        return {
            "sha256": self.sha256,
            "given": self.given,
            "suggested": self.suggested,
            "score": round(self.score, 4),
        }


def find_suspects(
    probs: np.ndarray, labels: np.ndarray, sha256: Sequence[str], classes: Sequence[str]
) -> list[Suspect]:
    """Suspected mislabels, worst first. `labels` are class indices of `probs`' columns."""
    from cleanlab.filter import find_label_issues
    from cleanlab.rank import get_label_quality_scores

    if len(labels) == 0:
        return []
    probs = _renormalised(probs)
    with warnings.catch_warnings():
        # "too few examples in class k": expected on small drops; the report says how many
        warnings.simplefilter("ignore", UserWarning)
        issues = find_label_issues(
            labels, probs, return_indices_ranked_by="self_confidence", n_jobs=1
        )
    quality = get_label_quality_scores(labels, probs)
    suggested = probs.argmax(axis=1)
    return [
        Suspect(sha256[i], classes[labels[i]], classes[suggested[i]], float(quality[i]))
        for i in issues
    ]


def _renormalised(probs: np.ndarray) -> np.ndarray:
    """float64 rows summing to exactly 1 (cleanlab checks the sums strictly)."""
    probs = np.clip(probs.astype(np.float64), 1e-12, None)
    return probs / probs.sum(axis=1, keepdims=True)


def conflicting_pairs(
    new: Sequence[tuple[str, str, int]],
    stored: Sequence[tuple[str, str, int]],
    distance: int,
) -> list[dict[str, Any]]:
    """Near-duplicate pairs with two labels: each of (sha256, label, phash) against the other
    new images and the stored ones. Identical bytes (same sha256) are ingest's business."""
    if not new:
        return []
    hashes = np.array([h for _, _, h in new], dtype=np.uint64)
    pairs = []
    others = list(new) + list(stored)
    other_hashes = np.array([h for _, _, h in others], dtype=np.uint64)
    for i, j in _close_pairs(hashes, other_hashes, distance):
        a, b = new[i], others[j]
        if j < len(new) and j <= i:
            continue  # each pair inside the drop once
        if a[0] != b[0] and a[1] != b[1]:
            pairs.append(
                {
                    "sha256": a[0],
                    "label": a[1],
                    "other_sha256": b[0],
                    "other_label": b[1],
                    "other_stored": j >= len(new),
                    "distance": int(hamming(hashes[i : i + 1], other_hashes[j : j + 1])[0, 0]),
                }
            )
    return pairs


def _close_pairs(a: np.ndarray, b: np.ndarray, distance: int, rows: int = 64):
    """(i, j) with hamming(a[i], b[j]) <= distance, a block of rows at a time (bounded memory)."""
    for start in range(0, len(a), rows):
        close = hamming(a[start : start + rows], b) <= distance
        for i, j in zip(*np.nonzero(close), strict=True):
            yield start + int(i), int(j)
