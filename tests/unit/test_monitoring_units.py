"""The statistics under monitoring: MMD permutation test, uncertainty, k-center greedy,
pHash distances and near-duplicate pairs with two labels."""

from __future__ import annotations

import numpy as np

from visionloop.config import DriftConfig
from visionloop.models.zoo import ZOO
from visionloop.monitoring import drift, labels
from visionloop.monitoring.explain import TARGET_LAYERS
from visionloop.monitoring.features import Seen
from visionloop.monitoring.select import k_center_greedy, rank_for_labelling, uncertainty


def test_mmd_tells_a_shift_from_a_resample():
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(200, 8))
    same = rng.normal(size=(100, 8))
    shifted = rng.normal(size=(100, 8)) + 0.8
    stat_same, p_same = drift.mmd_permutation_test(reference, same, 200, seed=0)
    stat_shift, p_shift = drift.mmd_permutation_test(reference, shifted, 200, seed=0)
    assert p_same > 0.05 and p_shift < 0.01
    assert stat_shift > stat_same >= 0
    assert p_shift >= 1 / 201  # a permutation p-value is never 0


def test_compare_gives_a_bonferroni_verdict():
    rng = np.random.default_rng(1)

    def seen(n, shift):
        probs = rng.dirichlet(np.ones(3) * (0.3 + shift), size=n).astype(np.float32)
        return Seen(rng.normal(size=(n, 4)).astype(np.float32) + shift, probs)

    rules = DriftConfig(permutations=100)
    calm = drift.compare(seen(150, 0.0), seen(80, 0.0), rules)
    alarm = drift.compare(seen(150, 0.0), seen(80, 2.0), rules)
    assert calm.verdict == "none" and alarm.verdict == "alert"
    assert alarm.p_value == min(1.0, 2 * min(alarm.mmd_p, alarm.ks_p))
    assert drift.verdict_of(0.03, rules) == "warn"


def test_uncertainty_and_k_center_greedy():
    probs = np.array([[0.98, 0.01, 0.01], [0.5, 0.49, 0.01], [0.34, 0.33, 0.33]])
    assert np.argsort(-uncertainty(probs, "margin")).tolist() == [1, 2, 0]
    assert np.argsort(-uncertainty(probs, "entropy"))[0] == 2
    points = np.array([[0.0, 0], [0.1, 0], [10, 0], [10.1, 0], [0, 10]])
    cluster = {0: "a", 1: "a", 2: "b", 3: "b", 4: "c"}
    assert sorted(cluster[i] for i in k_center_greedy(points, 3)) == ["a", "b", "c"]
    # four uncertain near-copies and one other: diversity takes the other second
    probs = np.array([[0.5, 0.5]] * 4 + [[0.55, 0.45], [0.99, 0.01]])
    embeddings = np.array([[0, 0]] * 4 + [[5, 5], [9, 9]], dtype=float)
    assert rank_for_labelling(probs, embeddings, 2, "margin", pool_factor=2.5) == [0, 4]
    assert rank_for_labelling(probs, embeddings, 2, "margin", pool_factor=1) == [0, 1]


def test_near_duplicate_pairs_with_two_labels():
    assert labels.hamming(np.array([0b1011], np.uint64), np.array([0b0001], np.uint64))[0, 0] == 2
    new = [("a", "cat", 0b1111), ("b", "dog", 0b1110), ("c", "cat", 0b1111 << 40)]
    stored = [("d", "dog", 0b0111), ("a", "dog", 0b1111)]  # same sha: ingest's business
    pairs = labels.conflicting_pairs(new, stored, distance=2)
    assert {(p["sha256"], p["other_sha256"], p["other_stored"]) for p in pairs} == {
        ("a", "b", False),
        ("a", "d", True),
    }


def test_every_architecture_has_grad_cam_layers():
    assert set(TARGET_LAYERS) == set(ZOO)
