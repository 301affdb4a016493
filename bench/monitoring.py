"""Monitoring on the demo digits, with repeats: drift detection and false alarms, label-issue
precision and recall, selection against random, and the cost of the checks per drop.

A simple_cnn "champion" is trained on half the digits (16 px, the gate tests' recipe); drops
are drawn from the other half, which it never saw. Run from the repo root:
`nice -n 10 python -m bench.monitoring [--repeats 20] [--seeds 3]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.helpers import REPO_PARAMS
from tests.integration.gate.trained import META, digits_rgb, train
from tests.integration.monitoring.helpers import flip_labels, png_bytes
from visionloop.config import load_config
from visionloop.data.ingest.run import StagedImage
from visionloop.models.classifier import Classifier
from visionloop.monitoring import drift, labels
from visionloop.monitoring.features import embed
from visionloop.monitoring.intake import check_drop
from visionloop.monitoring.reference import Watched
from visionloop.monitoring.select import rank_for_labelling

DROP = 100
STEPS = 150


def champion(images, labels_, seed=0) -> tuple[Classifier, float]:
    started = time.perf_counter()
    (model,) = train(images, labels_, snapshots=(STEPS,), seed=seed)
    return Classifier(model, META), time.perf_counter() - started


def shifted(kind: str, images: np.ndarray, rng) -> np.ndarray:
    if kind == "none":
        return images
    if kind == "inverted":
        return 255 - images
    if kind == "rotated 30":
        return np.stack(
            [np.asarray(Image.fromarray(i).rotate(30, fillcolor=(0, 0, 0))) for i in images]
        )
    if kind == "noise sd 40":
        noisy = images.astype(np.float32) + rng.normal(0, 40, images.shape)
        return np.clip(noisy, 0, 255).astype(np.uint8)
    raise ValueError(kind)


def bench_drift(classifier, reference, pool, repeats, rules):
    print(
        f"\n## Drift: {repeats} drops of {DROP} unseen digits per condition, alpha 0.05 "
        "(Bonferroni over MMD and KS), 500 permutations"
    )
    print("| drop | flagged (p < 0.05) | MMD p median | KS p median | p (corrected) mean |")
    print("|---|---|---|---|---|")
    ref_seen = embed(classifier, reference)
    for kind in ("none", "inverted", "rotated 30", "noise sd 40"):
        flagged, mmd_ps, ks_ps, ps = 0, [], [], []
        for repeat in range(repeats):
            rng = np.random.default_rng(1000 + repeat)
            drop = pool[rng.choice(len(pool), DROP, replace=False)]
            result = drift.compare(ref_seen, embed(classifier, shifted(kind, drop, rng)), rules)
            flagged += result.p_value < 0.05
            mmd_ps.append(result.mmd_p)
            ks_ps.append(result.ks_p)
            ps.append(result.p_value)
        print(
            f"| {kind} | {flagged}/{repeats} ({flagged / repeats:.0%}) | "
            f"{np.median(mmd_ps):.3g} | {np.median(ks_ps):.3g} | {np.mean(ps):.3g} |"
        )


def bench_labels(classifier, pool, pool_labels, repeats):
    print(f"\n## Label issues: {repeats} drops of 200 unseen digits, 10% of labels flipped")
    precision, recall, flagged = [], [], []
    for repeat in range(repeats):
        rng = np.random.default_rng(2000 + repeat)
        idx = rng.choice(len(pool), 200, replace=False)
        noisy, flipped = flip_labels(pool_labels[idx], 0.10, seed=repeat)
        probs = classifier.predict_proba(pool[idx])
        shas = [str(i) for i in range(200)]
        found = {int(s.sha256) for s in labels.find_suspects(probs, noisy, shas, META.classes)}
        hit = len(found & set(flipped.tolist()))
        precision.append(hit / len(found) if found else 1.0)
        recall.append(hit / len(flipped))
        flagged.append(len(found))
    clean = []  # the same drops with their true labels: what a hold threshold must clear
    for repeat in range(repeats):
        rng = np.random.default_rng(2000 + repeat)
        idx = rng.choice(len(pool), 200, replace=False)
        probs = classifier.predict_proba(pool[idx])
        shas = [str(i) for i in range(200)]
        clean.append(len(labels.find_suspects(probs, pool_labels[idx], shas, META.classes)))
    print("| figure | mean | sd | min | max |")
    print("|---|---|---|---|---|")
    for name, values in (
        ("precision", precision),
        ("recall", recall),
        ("flagged of 200 (20 flipped)", flagged),
        ("flagged of 200, no label flipped", clean),
    ):
        print(
            f"| {name} | {np.mean(values):.3f} | {np.std(values):.3f} | {np.min(values):.3f} "
            f"| {np.max(values):.3f} |"
        )


def bench_selection(images, labels_, seeds, start_per_class=10, budget=100):
    print(
        f"\n## Selection: start {start_per_class * 10} labelled + {budget} chosen by select "
        f"vs {budget} random, {seeds} seeds, simple_cnn {STEPS} steps, top-1 on 500 test digits"
    )
    print("| seed | start only | + select | + random |")
    print("|---|---|---|---|")
    test_x, test_y = images[:500], labels_[:500]
    rest_x, rest_y = images[500:], labels_[500:]
    rows = []
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        start = np.concatenate(
            [
                rng.choice(np.flatnonzero(rest_y == c), start_per_class, replace=False)
                for c in range(10)
            ]
        )
        pool = np.setdiff1d(np.arange(len(rest_y)), start)
        model, _ = champion(rest_x[start], rest_y[start], seed)
        seen = embed(model, rest_x[pool])
        chosen = pool[rank_for_labelling(seen.probs, seen.embeddings, budget, "margin", 3.0)]
        random_pick = rng.choice(pool, budget, replace=False)
        accuracy = []
        for extra in (np.array([], dtype=int), chosen, random_pick):
            idx = np.concatenate([start, extra])
            trained, _ = champion(rest_x[idx], rest_y[idx], seed)
            accuracy.append(float((trained.predict_proba(test_x).argmax(1) == test_y).mean()))
        rows.append(accuracy)
        print(f"| {seed} | {accuracy[0]:.3f} | {accuracy[1]:.3f} | {accuracy[2]:.3f} |")
    mean, sd = np.mean(rows, axis=0), np.std(rows, axis=0)
    print(
        f"| mean ± sd | {mean[0]:.3f} ± {sd[0]:.3f} | {mean[1]:.3f} ± {sd[1]:.3f} | "
        f"{mean[2]:.3f} ± {sd[2]:.3f} |"
    )


def bench_cost(classifier, train_seconds, pool, pool_labels, repeats=5):
    """The ingest path's check of one drop: decode the staged PNGs, pHash, embed (drop and
    reference), MMD + KS, cleanlab; against the champion's training time."""
    config = load_config(REPO_PARAMS, overrides={"data": {"ingest": {"label_issues": "warn"}}})
    train_x = digits_rgb()[0][300:]
    with tempfile.TemporaryDirectory() as folder:
        staged = []
        for i, (image, label) in enumerate(zip(pool[:DROP], pool_labels[:DROP], strict=True)):
            path = Path(folder) / f"{i}.png"
            data = png_bytes(image)
            path.write_bytes(data)
            staged.append(StagedImage(f"{i:064x}", str(label), path))
        watched = Watched(classifier, "bench")
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            reference = embed(classifier, train_x[:1000])
            check_drop(config, "bench", staged, lambda seen=reference: (watched, seen))
            times.append(time.perf_counter() - started)
    best = min(times)
    print(f"\n## Cost per drop ({DROP} images, reference 1000 images), best of {repeats}")
    print("| step | seconds |")
    print("|---|---|")
    print(f"| checks of one drop (decode, pHash, embed, MMD+KS, cleanlab) | {best:.2f} |")
    print(f"| training the champion ({STEPS} steps, simple_cnn 16 px) | {train_seconds:.2f} |")
    print(f"| ratio checks / training | {best / train_seconds:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)  # tiny batches: one thread is faster on a busy 2-core machine
    images, labels_ = digits_rgb()  # a fixed shuffle; the first 300 are never trained on
    half = len(labels_) // 2
    pool, pool_labels = images[:half], labels_[:half]
    reference, reference_labels = images[half:], labels_[half:]
    classifier, train_seconds = champion(reference, reference_labels)
    top1 = float((classifier.predict_proba(pool).argmax(1) == pool_labels).mean())
    print(
        f"champion: simple_cnn, {len(reference_labels)} digits, {STEPS} steps, "
        f"{train_seconds:.1f} s; top-1 on the {len(pool)} unseen digits {top1:.3f}"
    )
    rules = load_config(REPO_PARAMS).monitoring.drift
    bench_drift(classifier, reference, pool, args.repeats, rules)
    bench_labels(classifier, pool, pool_labels, args.repeats)
    bench_cost(classifier, train_seconds, pool, pool_labels)
    bench_selection(images, labels_, args.seeds)


if __name__ == "__main__":
    main()
