import json
import shutil
from collections import Counter

import numpy as np
import pytest

from tests.helpers import REPO_PARAMS
from tests.rawdata import add_drop, near_copy, pattern_image
from visionloop.artifacts.split_table import EXCLUDED, Row, read_split
from visionloop.config import SplitConfig, load_config
from visionloop.data.splits import NewImage, audit_split, near_pairs, ordered_drops, place_drop
from visionloop.data.splits import run as run_split
from visionloop.errors import VisionloopError


def make_config(tmp_path, **split):
    """The repo's params in tmp_path (so every path is under it), no DVC, `split` overrides."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO_PARAMS, tmp_path / "params.yaml")
    overrides = {"data": {"dvc": {"track": False}}, "split": split}
    return load_config(tmp_path / "params.yaml", overrides)


def images(label, seeds):
    return [(label, pattern_image(seed)) for seed in seeds]


def assignments(config):
    return {row.sha256: row for row in read_split(config.split.dir)}


def test_near_pairs_finds_exactly_the_close_pairs():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=300, dtype=np.int64).view(np.uint64)
    flips = [np.uint64(1 << int(b)) for b in rng.choice(64, size=3, replace=False)]
    hashes[10] = hashes[3] ^ flips[0] ^ flips[1] ^ flips[2]  # distance 3
    hashes[20] = hashes[3] ^ flips[0] ^ flips[1]  # distance 2 to 3, 1 to 10
    brute = {
        (i, j)
        for i in range(300)
        for j in range(i + 1, 300)
        if bin(int(hashes[i]) ^ int(hashes[j])).count("1") <= 3
    }
    ia, ib = near_pairs(hashes, hashes, 3)
    assert set(zip(ia.tolist(), ib.tolist(), strict=True)) == brute
    assert {(3, 10), (3, 20), (10, 20)} <= brute


def test_split_is_deterministic_and_stable_across_drops(tmp_path):
    config = make_config(tmp_path)
    add_drop(config, "d1", images("a", range(60)) + images("b", range(100, 140)))
    run_split(config)
    first = assignments(config)
    add_drop(config, "d2", images("a", range(200, 230)) + images("b", range(300, 320)))
    summary = run_split(config)
    second = assignments(config)

    assert summary["new"] == 50 and summary["previous_split"] == "continued"
    assert all(second[sha].split == row.split for sha, row in first.items())
    incremental = (config.split.dir / "split.csv").read_bytes()
    shutil.rmtree(config.split.dir)  # a fresh clone that did not pull: replay from scratch
    assert run_split(config)["previous_split"] == "none: split from scratch"
    assert (config.split.dir / "split.csv").read_bytes() == incremental


def test_a_planted_near_duplicate_pair_shares_a_split_now_and_later(tmp_path):
    config = make_config(tmp_path)
    originals = [pattern_image(seed) for seed in range(40)]
    drop = [("a", image) for image in originals] + [("a", near_copy(originals[0]))]
    shas = add_drop(config, "d1", drop)
    run_split(config)
    rows = assignments(config)
    assert rows[shas[0]].split == rows[shas[-1]].split
    assert rows[shas[0]].group == rows[shas[-1]].group

    later = [("a", near_copy(originals[i], shift=2)) for i in range(40)]
    later_shas = add_drop(config, "d2", later)
    run_split(config)
    rows = assignments(config)
    for original, copy in zip(shas[:40], later_shas, strict=True):
        if rows[original].split == "test":  # frozen: joining test would change it
            assert rows[copy].split == EXCLUDED and rows[copy].reason == "frozen_test"
        else:
            assert rows[copy].split == rows[original].split
            assert rows[copy].reason == "joined_group"
    audit = json.loads((config.split.dir / "audit.json").read_text())
    assert audit["cross_split_near_duplicate_pairs"] == 0


def placed_row(sha_char, split, phash):
    return Row(sha_char * 64, "a", split, sha_char * 16, f"{phash:016x}", "d1", "stratified")


@pytest.mark.parametrize(
    ("policy", "neighbours", "split", "reason"),
    [
        ("frozen", {"train"}, "train", "joined_group"),
        ("frozen", {"train", "val"}, EXCLUDED, "bridges_splits"),
        ("frozen", {"test"}, EXCLUDED, "frozen_test"),
        ("grow", {"test"}, "test", "joined_group"),
    ],
)
def test_a_new_near_duplicate_follows_its_group_or_is_excluded(policy, neighbours, split, reason):
    # 0x0f is 4 bits from both 0x00 and 0xff; 0xffff0000... is far from everything
    hashes = {"train": 0x00, "val": 0xFF, "test": 0x00}
    placed = {
        row.sha256: row
        for row in [
            placed_row(c, s, hashes[s]) for c, s in zip("abc", sorted(neighbours), strict=False)
        ]
        + [placed_row("e", "val", 0xFFFF000000000000)]
    }
    new = NewImage("f" * 64, "a", "d2", 0x0F)
    row = place_drop(placed, [new], SplitConfig(test_policy=policy))["f" * 64]
    assert (row.split, row.reason) == (split, reason)
    if split != EXCLUDED:
        assert row.group == placed_row("a", split, 0).group


def test_stratified_per_class_also_for_small_classes(tmp_path):
    config = make_config(tmp_path)
    sizes = {"big": 300, "mid": 40, "small": 7}
    drop = []
    for offset, (label, size) in enumerate(sizes.items()):
        drop += images(label, range(offset * 1000, offset * 1000 + size))
    add_drop(config, "d1", drop)
    run_split(config)
    counts = Counter((row.label, row.split) for row in assignments(config).values())
    for label, size in sizes.items():
        for split, fraction in (("train", 0.7), ("val", 0.15), ("test", 0.15)):
            assert abs(counts[label, split] - fraction * size) <= 1, (label, split, counts)
    assert counts["small", "test"] >= 1 and counts["small", "val"] >= 1


def test_frozen_test_never_changes_and_grow_lets_new_data_in(tmp_path):
    for policy in ("frozen", "grow"):
        config = make_config(tmp_path / policy, test_policy=policy)
        add_drop(config, "d1", images("a", range(100)) + images("b", range(200, 260)))
        first = run_split(config)
        test_before = {s for s, r in assignments(config).items() if r.split == "test"}
        add_drop(config, "d2", images("a", range(500, 560)) + images("c", range(600, 640)))
        second = run_split(config)
        rows = assignments(config)
        new_test = {s for s, r in rows.items() if r.split == "test"} - test_before
        new_test_labels = {rows[s].label for s in new_test}
        if policy == "frozen":
            # only the class that had no test images yet (c) may enter test
            assert new_test_labels == {"c"}
            assert test_before <= {s for s, r in rows.items() if r.split == "test"}
            assert Counter(r.split for r in rows.values() if r.label == "a")["test"] == 15
        else:
            assert new_test_labels == {"a", "c"}
            assert second["test_version"] != first["test_version"]


def test_changing_split_params_or_editing_the_csv_starts_a_new_split(tmp_path):
    config = make_config(tmp_path)
    add_drop(config, "d1", images("a", range(50)))
    run_split(config)
    assert run_split(config)["previous_split"] == "continued"
    reseeded = make_config(tmp_path, seed=1)
    assert run_split(reseeded)["previous_split"] == "split params changed: split from scratch"
    csv_path = reseeded.split.dir / "split.csv"
    csv_path.write_text(csv_path.read_text().replace(",train,", ",test,", 1))
    assert run_split(reseeded)["previous_split"] == "split.csv was edited: split from scratch"


def test_removed_images_leave_the_split_and_the_rest_stay(tmp_path):
    config = make_config(tmp_path)
    shas = add_drop(config, "d1", images("a", range(30)))
    run_split(config)
    before = assignments(config)
    # the same bytes with another label: ingest quarantines every copy (a label conflict)
    add_drop(config, "d2", [("b", pattern_image(seed)) for seed in range(3)])
    assert run_split(config)["removed"] == 3
    after = assignments(config)
    assert set(after) == set(shas[3:])
    assert all(after[s].split == before[s].split for s in after)


def test_audit_counts_cross_split_pairs_and_per_class_counts():
    rows = [
        Row("a" * 64, "x", "train", "g1", "00000000000000ff", "d", "stratified"),
        Row("b" * 64, "x", "test", "g2", "00000000000000fe", "d", "stratified"),
        Row("c" * 64, "y", "val", "g3", "ff00000000000000", "d", "stratified"),
        Row("d" * 64, "y", EXCLUDED, "g4", "00000000000000ff", "d", "bridges_splits"),
    ]
    audit = audit_split(rows, SplitConfig())
    assert audit["cross_split_near_duplicate_pairs"] == 1  # excluded images do not count
    assert audit["per_class"]["x"] == {"train": 1, "val": 0, "test": 1, EXCLUDED: 0}
    assert audit["images_per_split"][EXCLUDED] == 1


def test_missing_manifest_is_a_user_error(tmp_path):
    with pytest.raises(VisionloopError, match="ingest a drop first"):
        run_split(make_config(tmp_path))


def test_drops_are_placed_in_ingest_order_even_within_one_second():
    rows = [
        {"sha256": "b", "drop_id": "zz", "ingested_at": "2026-01-01T00:00:00+00:00"},
        {"sha256": "a", "drop_id": "aa", "ingested_at": "2026-01-01T00:00:00+00:00"},
        {"sha256": "c", "drop_id": "mm", "ingested_at": "2025-12-31T23:59:59+00:00"},
    ]
    assert [drop[0]["drop_id"] for drop in ordered_drops(rows)] == ["mm", "zz", "aa"]
