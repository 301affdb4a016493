"""Has the input changed? Two tests of new images against the champion's training images.

The recipe Rabanser et al. ("Failing Loudly", 2019) found strongest for image data:

- MMD permutation test on the champion's penultimate-layer embeddings: a Gaussian kernel
  whose width is the median pairwise distance of the pooled sample; the statistic is the
  (biased) squared MMD, and its p-value is the share of label permutations that reach it.
- Kolmogorov-Smirnov test on the maximum softmax probability (scipy's two-sample KS).

The verdict takes the smaller p-value, Bonferroni-corrected for the two tests: below
`alert_p` it is `alert`, below `warn_p` it is `warn`, else `none`. The effect sizes are the
squared MMD (in kernel units, 0 = same distribution) and KS's D (0..1).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from visionloop.config import DriftConfig
from visionloop.monitoring.features import Seen

VERDICTS = ("none", "warn", "alert")
TESTS = 2  # MMD and KS: the Bonferroni factor


@dataclass(frozen=True)
class DriftResult:
    verdict: str  # none | warn | alert
    p_value: float  # the smaller of the two, Bonferroni-corrected
    mmd_p: float
    mmd2: float
    ks_p: float
    ks_d: float
    reference_images: int
    images: int
    mean_confidence: float
    reference_confidence: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def subsample(count: int, limit: int, seed: int) -> np.ndarray:
    """At most `limit` indices of `count`, evenly random and sorted (deterministic)."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def _squared_distances(points: np.ndarray) -> np.ndarray:
    norms = np.einsum("ij,ij->i", points, points)
    return np.maximum(norms[:, None] + norms[None, :] - 2.0 * points @ points.T, 0.0)


def mmd_permutation_test(
    x: np.ndarray, y: np.ndarray, permutations: int, seed: int
) -> tuple[float, float]:
    """(squared MMD, permutation p-value) of two samples of embeddings."""
    pooled = np.concatenate([x, y]).astype(np.float64)
    distances = _squared_distances(pooled)
    upper = distances[np.triu_indices(len(pooled), k=1)]
    width = float(np.median(upper[upper > 0])) if np.any(upper > 0) else 1.0
    kernel = np.exp(-distances / width)
    n, m = len(x), len(y)
    # each column: +1/n on one sample's rows, -1/m on the other's; MMD^2 = w' K w
    rng = np.random.default_rng(seed)
    orders = [np.arange(n + m)] + [rng.permutation(n + m) for _ in range(permutations)]
    weights = np.empty((n + m, len(orders)))
    for column, order in enumerate(orders):
        weights[order[:n], column] = 1.0 / n
        weights[order[n:], column] = -1.0 / m
    stats = np.einsum("ij,ij->j", weights, kernel @ weights)
    observed = stats[0]
    p_value = (1 + np.sum(stats[1:] >= observed)) / (1 + permutations)
    return float(observed), float(p_value)


def verdict_of(p_value: float, rules: DriftConfig) -> str:
    if p_value < rules.alert_p:
        return "alert"
    if p_value < rules.warn_p:
        return "warn"
    return "none"


def compare(reference: Seen, new: Seen, rules: DriftConfig) -> DriftResult:
    """Both tests of `new` against `reference` (each capped at its size limit)."""
    from scipy.stats import ks_2samp

    ref_idx = subsample(len(reference), rules.max_reference, rules.seed)
    new_idx = subsample(len(new), rules.max_images, rules.seed + 1)
    x, y = reference.embeddings[ref_idx], new.embeddings[new_idx]
    mmd2, mmd_p = mmd_permutation_test(x, y, rules.permutations, rules.seed)
    ks = ks_2samp(reference.confidence[ref_idx], new.confidence[new_idx])
    p_value = min(1.0, TESTS * min(mmd_p, float(ks.pvalue)))
    return DriftResult(
        verdict=verdict_of(p_value, rules),
        p_value=p_value,
        mmd_p=mmd_p,
        mmd2=mmd2,
        ks_p=float(ks.pvalue),
        ks_d=float(ks.statistic),
        reference_images=len(ref_idx),
        images=len(new_idx),
        mean_confidence=float(new.confidence.mean()),
        reference_confidence=float(reference.confidence.mean()),
    )
