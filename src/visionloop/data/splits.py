"""The split stage: every image in the manifest gets train, val, test (or excluded), for good.

Rules (docs/splits.md has the reasoning):
- stable: the previous split.csv (a DVC `persist` output) is authoritative; only images new to
  the manifest are placed, one drop at a time in ingest order. With no usable previous split,
  the same drop-by-drop replay from an empty state gives the same result, so the split is a
  pure function of the manifest's history and the `split` params.
- leakage-safe: images whose 64-bit perceptual hashes (imagehash.phash) differ in at most
  `near_duplicate_distance` bits are one group and share a split. A new image close to images
  in two different splits, or (frozen policy) close to a test image, is `excluded`.
- stratified: new groups are placed per class, largest first, each into the split furthest
  below its target count, with targets over the class's cumulative images.
- test policy: `frozen` lets a class into test only while it has no test images yet; `grow`
  lets every drop into test at its fraction. The test set's version is recorded.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.artifacts import raw_store, split_table
from visionloop.artifacts.split_table import EXCLUDED, SPLITS, Row
from visionloop.config import Config, SplitConfig
from visionloop.data.parallel import default_workers, map_member_chunks
from visionloop.errors import VisionloopError
from visionloop.progress import track

# Bump when the placement rules change: a previous split made by other rules is not reused.
ALGORITHM_VERSION = 1

# Why an image is where it is (the `reason` column).
STRATIFIED = "stratified"  # a new group, placed by class balance
JOINED = "joined_group"  # near-duplicate of images already placed: took their split
BRIDGE = "bridges_splits"  # near-duplicate of images in two splits: would leak either way
FROZEN_TEST = "frozen_test"  # near-duplicate of a test image while test is frozen


@dataclass(frozen=True)
class NewImage:
    sha256: str
    label: str
    drop_id: str
    phash: int


# ---------------------------------------------------------------- the stage


def run(config: Config) -> dict[str, Any]:
    """Read the manifest and the previous split, place new images, audit, write the outputs."""
    params = config.split
    manifest = {row["sha256"]: row for row in raw_store.require_manifest(config.data.raw_dir)}
    previous, reused_because = split_table.read_previous(params.dir, fingerprint(params))
    kept = {sha: row for sha, row in previous.items() if sha in manifest}
    new = [row for sha, row in manifest.items() if sha not in kept]
    rows = place_new_images(kept, new, config.data.raw_dir, params)
    rows = {sha: replace(row, label=manifest[sha]["label"]) for sha, row in sorted(rows.items())}

    audit = audit_split(rows.values(), params)
    split_table.write_audit(params.dir, audit)
    if audit["cross_split_near_duplicate_pairs"]:
        raise VisionloopError(
            f"split audit: {audit['cross_split_near_duplicate_pairs']} near-duplicate pairs "
            f"cross splits (see {params.dir / split_table.AUDIT_FILE}); split.csv was not changed"
        )
    split_table.write_split(params.dir, rows.values(), fingerprint(params))
    split_table.write_class_counts(params.dir, audit)
    return {
        "images": len(rows),
        "new": len(new),
        "removed": len(previous) - len(kept),
        "previous_split": reused_because,
        "splits": audit["images_per_split"],
        "test_version": audit["test_version"],
    }


# ---------------------------------------------------------------- inputs


def ordered_drops(rows: Iterable[dict[str, str]]) -> list[list[dict[str, str]]]:
    """New manifest rows grouped by drop, in ingest order: earliest `ingested_at` first, and
    drops ingested within the same second in the order ingest appended them to the manifest."""
    drops: dict[str, list[dict[str, str]]] = defaultdict(list)
    for row in rows:
        drops[row["drop_id"]].append(row)
    # sorted() is stable and `drops` keeps first-appearance order, which breaks the ties
    order = sorted(drops, key=lambda d: min(r["ingested_at"] for r in drops[d]))
    return [sorted(drops[d], key=lambda r: r["sha256"]) for d in order]


def perceptual_hash(source: Path | bytes) -> int:
    """64-bit DCT hash of the upright RGB image (imagehash.phash, 8x8)."""
    import imagehash

    from visionloop.images import open_rgb

    bits = imagehash.phash(open_rgb(source), hash_size=8).hash.flatten()
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


def hash_members(raw_dir: Path, members: list[raw_store.Member]) -> list[tuple[str, int]]:
    """(sha256, perceptual hash) of each stored image, read from its shard."""
    return [
        (m.sha256, perceptual_hash(data)) for m, data in raw_store.read_members(raw_dir, members)
    ]


# ---------------------------------------------------------------- the previous split


def fingerprint(params: SplitConfig) -> dict[str, Any]:
    """What a previous split must have been made with to be continued."""
    return {"algorithm": ALGORITHM_VERSION, **params.model_dump(mode="json", exclude={"dir"})}


# ---------------------------------------------------------------- placement


def place_new_images(
    kept: dict[str, Row], new: list[dict[str, str]], raw_dir: Path, params: SplitConfig
) -> dict[str, Row]:
    """Hash the new images, then place them drop by drop, each drop seeing the ones before."""
    members = raw_store.reading_order(raw_store.member_of(row) for row in new)
    # processes, not threads: decoding small images is mostly Python work (the GIL)
    chunks = map_member_chunks(hash_members, raw_dir, members, default_workers())
    pairs = itertools.chain.from_iterable(chunks)
    hashes = dict(track(pairs, len(members), "perceptual hashes"))
    rows = dict(kept)
    for drop in ordered_drops(new):
        batch = [NewImage(r["sha256"], r["label"], r["drop_id"], hashes[r["sha256"]]) for r in drop]
        rows.update(place_drop(rows, batch, params))
    return rows


def place_drop(
    placed: dict[str, Row], batch: list[NewImage], params: SplitConfig
) -> dict[str, Row]:
    """Rows for one drop's new images, given everything placed before them."""
    old = [row for row in placed.values() if row.split != EXCLUDED]
    old_hashes = np.array([int(row.phash, 16) for row in old], dtype=np.uint64)
    new_hashes = np.array([image.phash for image in batch], dtype=np.uint64)
    components = new_components(new_hashes, params.near_duplicate_distance)
    neighbours: dict[int, list[Row]] = defaultdict(list)
    for i, j in zip(
        *near_pairs(new_hashes, old_hashes, params.near_duplicate_distance), strict=True
    ):
        neighbours[components[i]].append(old[j])

    members: dict[int, list[NewImage]] = defaultdict(list)
    for index, image in enumerate(batch):
        members[components[index]].append(image)

    result: dict[str, Row] = {}
    free: list[list[NewImage]] = []
    for root, images in members.items():
        touched = neighbours.get(root, [])
        splits = {row.split for row in touched}
        if not splits:
            free.append(images)
        elif len(splits) > 1:
            result.update(make_rows(images, EXCLUDED, group_id(images), BRIDGE))
        elif splits == {"test"} and params.test_policy == "frozen":
            result.update(make_rows(images, EXCLUDED, group_id(images), FROZEN_TEST))
        else:
            result.update(make_rows(images, splits.pop(), min(r.group for r in touched), JOINED))
    result.update(stratify(free, {**placed, **result}, params))
    return result


def new_components(hashes: np.ndarray, max_distance: int) -> list[int]:
    """Connected components (union-find roots) of the near-duplicate graph among new images."""
    parent = list(range(len(hashes)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*near_pairs(hashes, hashes, max_distance), strict=True):
        parent[root(int(i))] = root(int(j))
    return [root(i) for i in range(len(hashes))]


def stratify(
    groups: list[list[NewImage]], placed: dict[str, Row], params: SplitConfig
) -> dict[str, Row]:
    """Place new groups per class: largest first, each into the split furthest below target."""
    by_class: dict[str, list[list[NewImage]]] = defaultdict(list)
    for images in groups:
        by_class[majority_label(images)].append(images)
    counts: dict[str, Counter[str]] = defaultdict(Counter)
    for row in placed.values():
        counts[row.label][row.split] += 1

    result: dict[str, Row] = {}
    for label, class_groups in sorted(by_class.items()):
        allowed = allowed_splits(params, has_test=counts[label]["test"] > 0)
        count = {split: counts[label][split] for split in allowed}
        total = sum(count.values()) + sum(len(g) for g in class_groups)
        weight = sum(getattr(params.fractions, s) for s in allowed)
        target = {s: getattr(params.fractions, s) / weight * total for s in allowed}
        ordered = sorted(
            class_groups, key=lambda g: (-len(g), seeded_key(params.seed, group_id(g)))
        )
        for images in ordered:
            group = group_id(images)
            split = max(
                allowed, key=lambda s: (target[s] - count[s], seeded_key(params.seed, s, group))
            )
            count[split] += len(images)
            result.update(make_rows(images, split, group, STRATIFIED))
    return result


def allowed_splits(params: SplitConfig, has_test: bool) -> list[str]:
    frozen_out = params.test_policy == "frozen" and has_test
    return [
        s for s in SPLITS if getattr(params.fractions, s) > 0 and not (s == "test" and frozen_out)
    ]


def majority_label(images: list[NewImage]) -> str:
    counts = Counter(image.label for image in images)
    return min(counts, key=lambda label: (-counts[label], label))


def group_id(images: list[NewImage]) -> str:
    return min(image.sha256 for image in images)[:16]


def seeded_key(seed: int, *parts: object) -> str:
    """A pseudo-random but reproducible order: the same for the same seed and inputs."""
    return hashlib.sha256(":".join(map(str, (seed, *parts))).encode()).hexdigest()


def make_rows(images: list[NewImage], split: str, group: str, reason: str) -> dict[str, Row]:
    return {
        image.sha256: Row(
            image.sha256, image.label, split, group, f"{image.phash:016x}", image.drop_id, reason
        )
        for image in images
    }


# ---------------------------------------------------------------- near duplicates


def near_pairs(a: np.ndarray, b: np.ndarray, max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (i, j) with Hamming(a[i], b[j]) <= max_distance; i < j when a is b.

    Pigeonhole: split the 64 bits into max_distance + 1 bands; two hashes that close agree
    exactly on at least one band, so only pairs sharing a band value are compared.
    """
    same = a is b
    edges = np.linspace(0, 64, max_distance + 2).round().astype(int)
    found = []
    for low, high in itertools.pairwise(edges):
        mask = np.uint64((1 << int(high - low)) - 1)
        ia, ib = _equal_key_pairs((a >> np.uint64(low)) & mask, (b >> np.uint64(low)) & mask)
        close = np.bitwise_count(a[ia] ^ b[ib]) <= max_distance
        keep = close & (ia < ib) if same else close
        found.append(ia[keep].astype(np.int64) * max(len(b), 1) + ib[keep])
    pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, dtype=np.int64)
    return pairs // max(len(b), 1), pairs % max(len(b), 1)


def _equal_key_pairs(a_keys: np.ndarray, b_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(b_keys, kind="stable")
    sorted_keys = b_keys[order]
    low = np.searchsorted(sorted_keys, a_keys, side="left")
    counts = np.searchsorted(sorted_keys, a_keys, side="right") - low
    ia = np.repeat(np.arange(len(a_keys)), counts)
    offsets = np.arange(len(ia)) - np.repeat(np.cumsum(counts) - counts, counts)
    return ia, order[np.repeat(low, counts) + offsets]


# ---------------------------------------------------------------- audit and outputs


def audit_split(rows: Iterable[Row], params: SplitConfig) -> dict[str, Any]:
    """Metrics DVC tracks: cross-split near-duplicate pairs (must be 0), counts per class."""
    rows = list(rows)
    used = [row for row in rows if row.split != EXCLUDED]
    hashes = np.array([int(row.phash, 16) for row in used], dtype=np.uint64)
    ia, ib = near_pairs(hashes, hashes, params.near_duplicate_distance)
    split_codes = np.array([SPLITS.index(row.split) for row in used], dtype=np.int8)
    crossing = int(np.count_nonzero(split_codes[ia] != split_codes[ib]))
    per_class: dict[str, dict[str, int]] = {}
    for label in sorted({row.label for row in rows}):
        split_counts = Counter(row.split for row in rows if row.label == label)
        per_class[label] = {s: split_counts[s] for s in (*SPLITS, EXCLUDED)}
    groups = Counter(row.group for row in used)
    per_split = Counter(row.split for row in rows)
    test = sorted(row.sha256 for row in rows if row.split == "test")
    return {
        "images": len(rows),
        "images_per_split": {s: per_split[s] for s in (*SPLITS, EXCLUDED)},
        "cross_split_near_duplicate_pairs": crossing,
        "near_duplicate_pairs": len(ia),
        "groups": len(groups),
        "largest_group": max(groups.values(), default=0),
        "max_class_fraction_gap": max_fraction_gap(per_class, params),
        "test_images": len(test),
        "test_version": hashlib.sha256("\n".join(test).encode()).hexdigest()[:12],
        "per_class": per_class,
    }


def max_fraction_gap(per_class: dict[str, dict[str, int]], params: SplitConfig) -> float:
    """Largest |actual - target| fraction over classes and splits (placed images only)."""
    gaps = [0.0]
    for counts in per_class.values():
        total = sum(counts[s] for s in SPLITS)
        gaps += [abs(counts[s] / total - getattr(params.fractions, s)) for s in SPLITS if total]
    return round(max(gaps), 4)
