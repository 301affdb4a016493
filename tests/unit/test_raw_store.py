"""The shard format of the raw store: a plain tar whose layout is known before it is written."""

import tarfile

import pytest

from visionloop.artifacts.raw_store import (
    Member,
    MissingImages,
    member_offsets,
    members_present,
    read_members,
    reading_order,
    write_shard,
)

SIZES = [1, 511, 512, 513, 3000, 0]


def members():
    return [(f"{i:064x}.png", bytes([i + 1]) * size) for i, size in enumerate(SIZES)]


def test_a_shard_is_a_deterministic_tar_with_offsets_known_before_writing(tmp_path):
    offsets = write_shard(tmp_path / "a.tar", members())
    assert offsets == member_offsets(SIZES)
    write_shard(tmp_path / "b.tar", members())
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()
    with tarfile.open(tmp_path / "a.tar") as tar:  # any tar reader sees the same members
        seen = [(i.name, i.offset_data, tar.extractfile(i).read()) for i in tar]
    assert seen == [(n, o, d) for (n, d), o in zip(members(), offsets, strict=True)]
    assert [p.name for p in tmp_path.iterdir()] == ["a.tar", "b.tar"]  # no temporary left


def test_members_are_read_straight_from_the_shard_and_checked_in_place(tmp_path):
    offsets = write_shard(tmp_path / "shards" / "d1.tar", members())
    stored = [
        Member(name[:64], "shards/d1.tar", name, offset, len(data))
        for (name, data), offset in zip(members(), offsets, strict=True)
    ]
    read = read_members(tmp_path, reading_order(reversed(stored)))
    assert [(m.name, data) for m, data in read] == members()
    moved = Member(stored[2].sha256, stored[2].shard, stored[2].name, offsets[3], 512)
    elsewhere = Member("0" * 64, "shards/d2.tar", "x.png", 512, 1)
    assert members_present(tmp_path, [*stored, moved, elsewhere]) == [True] * 6 + [False] * 2

    shard = tmp_path / "shards" / "d1.tar"
    shard.write_bytes(shard.read_bytes()[: offsets[4] + 100])  # cut inside the 3000-byte one
    assert members_present(tmp_path, stored) == [True] * 4 + [False, False]
    with pytest.raises(MissingImages, match="dvc pull"):
        list(read_members(tmp_path, [elsewhere]))
