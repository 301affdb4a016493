"""Every kind of bad file and bad drop, each with its reason code, beside valid siblings."""

from __future__ import annotations

import io
import json
import os
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.ingest_corpus import (
    assert_store_consistent,
    encode,
    jpeg,
    manifest,
    png,
    project,
    report,
    sha256,
    tar_drop,
    valid_drop,
    write,
    zip_drop,
)
from visionloop.data.ingest import ingest_drops
from visionloop.data.ingest.summary import problem

LIMITS = {
    "max_file_bytes": 60_000,
    "max_pixels": 1_000_000,
    "min_side": 8,
    "max_side": 500,
    "limits": {
        "max_members": 50,
        "max_bytes": 5_000_000,
        "max_ratio": 50,
        "ratio_min_bytes": 100_000,
    },
}

# path in the drop -> expected reason (None: accepted)
GOOD = {
    "cat/ok.png": png(1),
    "cat/ok.jpg": jpeg(2),
    "dog/ok.webp": encode(Image.new("RGB", (20, 20), (9, 9, 9)), "WEBP"),
    "dog/ok.bmp": encode(Image.new("RGB", (20, 20), (19, 9, 9)), "BMP"),
}


def _exif_rotated() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(Image.new("RGB", (40, 20), (1, 2, 3)), "JPEG", exif=exif.tobytes())


def _animated_webp() -> bytes:
    frames = [Image.new("RGB", (20, 20), c) for c in ((255, 0, 0), (0, 0, 255))]
    return encode(frames[0], "WEBP", save_all=True, append_images=frames[1:])


# Accepted, with the normalisation recorded in the manifest.
NORMALISED = {
    "cat/cmyk.jpg": (encode(Image.new("CMYK", (20, 20), (1, 2, 3, 4)), "JPEG"), "to_rgb"),
    "cat/rgba.png": (encode(Image.new("RGBA", (20, 20), (1, 2, 3, 0))), "alpha_composited"),
    "cat/palette.png": (encode(Image.new("P", (20, 20), 3)), "palette"),
    "dog/grey16.png": (
        encode(Image.fromarray(np.full((20, 20), 40000, dtype=np.uint16))),
        "rescale_high_bit_depth",
    ),
    "dog/rotated.jpg": (_exif_rotated(), "exif_orientation"),
    "dog/animated.webp": (_animated_webp(), "first_frame"),
}


def _truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _broken_idat() -> bytes:
    data = bytearray(encode(Image.effect_noise((64, 64), 50).convert("RGB")))
    start = data.index(b"IDAT") + 20
    data[start : start + 20] = b"\0" * 20
    return bytes(data)


BAD_FILES = {
    "cat/empty.png": (b"", "zero_bytes"),
    "cat/huge.bmp": (encode(Image.new("RGB", (200, 200)), "BMP"), "file_too_large"),
    "cat/notes.jpg": (b"these are my notes, not a picture\n" * 4, "not_an_image"),
    "cat/anim.gif": (encode(Image.new("P", (20, 20)), "GIF"), "format_not_allowed"),
    "dog/scan.tiff": (encode(Image.new("RGB", (20, 20)), "TIFF"), "format_not_allowed"),
    "cat/cut.jpg": (
        _truncated(encode(Image.effect_noise((64, 64), 80).convert("RGB"), "JPEG")),
        "truncated",
    ),
    "dog/cut.png": (
        _truncated(encode(Image.effect_noise((64, 64), 80).convert("RGB"))),
        "truncated",
    ),
    "dog/broken.png": (_broken_idat(), "corrupt"),
    "cat/bomb.png": (encode(Image.new("L", (1200, 1000))), "decompression_bomb"),
    "cat/tiny.png": (png(3, (4, 4)), "too_small"),
    "dog/wide.png": (png(4, (600, 10)), "too_large"),
    "cat/same.png": (png(5), "label_conflict"),
    "dog/same.png": (png(5), "label_conflict"),
    "root.png": (png(6), "no_label"),
    "cat/sub/deep.png": (png(7), "too_deep"),
    ".DS_Store": (b"\0\0\0\1Bud1", "os_metadata"),
    "cat/._ok.png": (b"\0\5\26\7AppleDouble", "os_metadata"),
    "__MACOSX/cat/._ok.png": (b"\0\5\26\7AppleDouble", "os_metadata"),
}
DUPLICATE = {"cat/zz-copy.png": png(1)}  # sorts after its original


@pytest.fixture(scope="module")
def mixed_drop(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("mixed")
    config = project(tmp_path, ingest=LIMITS)
    drop = config.data.incoming_dir / "mixed"
    members = {**GOOD, **DUPLICATE, **{k: v for k, (v, _) in {**NORMALISED, **BAD_FILES}.items()}}
    for name, data in members.items():
        write(drop / name, data)
    result = ingest_drops(config)
    (outcome,) = result.drops
    return config, outcome, {f["path"]: f for f in report(config, outcome.drop_id)["files"]}


@pytest.mark.parametrize(
    "path, reason", [(k, r) for k, (_, r) in BAD_FILES.items()], ids=list(BAD_FILES)
)
def test_each_bad_file_is_quarantined_with_its_reason(mixed_drop, path, reason):
    _, outcome, files = mixed_drop
    assert files[path]["outcome"] == "quarantined"
    assert files[path]["reason"] == reason
    reasons = json.loads((Path(outcome.quarantine_path) / "reasons.json").read_text())
    entry = next(f for f in reasons["files"] if f["path"] == f"files/{path}")
    assert entry["reason"] == reason
    kept = Path(outcome.quarantine_path) / entry["path"]
    assert kept.read_bytes() == BAD_FILES[path][0]  # the rejected file itself is kept


def test_valid_siblings_are_accepted_and_normalisation_is_recorded(mixed_drop):
    config, _, files = mixed_drop
    rows = {r["source_name"]: r for r in manifest(config)}
    for path, data in GOOD.items():
        assert files[path]["outcome"] == "accepted"
        assert rows[path.split("/")[1]]["sha256"] == sha256(data)
    for path, (_, step) in NORMALISED.items():
        assert files[path]["outcome"] == "accepted"
        assert step in rows[path.split("/")[1]]["normalisation"].split(";")
    rotated = rows["rotated.jpg"]
    assert (rotated["width"], rotated["height"], rotated["orientation"]) == ("20", "40", "6")
    assert rows["grey16.png"]["mode"] == "I;16"
    assert files["cat/zz-copy.png"]["outcome"] == "duplicate"
    assert_store_consistent(config)


def test_counts_add_up_and_nothing_is_dropped_silently(mixed_drop):
    config, outcome, files = mixed_drop
    assert outcome.files == len(files) == len(GOOD) + len(NORMALISED) + len(BAD_FILES) + 1
    assert outcome.files == outcome.accepted + outcome.duplicates + outcome.quarantined_total
    assert outcome.accepted == len(GOOD) + len(NORMALISED) == len(manifest(config))
    assert outcome.duplicates == 1
    assert outcome.quarantined["os_metadata"] == 3
    assert outcome.quarantined["label_conflict"] == 2


# -- whole drops --------------------------------------------------------------------------

SIBLING = {"cat/a.png": png(11), "dog/b.png": png(12)}


def _zip_with(tmp: Path, name: str, extra: dict[str, bytes], **kwargs) -> Path:
    return zip_drop(tmp / name, {**SIBLING, **extra}, **kwargs)


def _zip_symlink(path: Path) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in SIBLING.items():
            archive.writestr(name, data)
        link = zipfile.ZipInfo("cat/link.png")
        link.create_system = 3
        link.external_attr = 0o120777 << 16
        archive.writestr(link, "/etc/passwd")
    return path


def _zip_encrypted(path: Path) -> Path:
    _zip_with(path.parent, path.name, {})
    data = bytearray(path.read_bytes())
    for signature, offset in ((b"PK\x03\x04", 6), (b"PK\x01\x02", 8)):
        start = 0
        while (start := data.find(signature, start)) != -1:
            data[start + offset] |= 1
            start += 4
    path.write_bytes(bytes(data))
    return path


def _zip_duplicate(path: Path) -> Path:
    import zipfile

    with warnings.catch_warnings(), zipfile.ZipFile(path, "w") as archive:
        warnings.simplefilter("ignore")
        for name, data in SIBLING.items():
            archive.writestr(name, data)
        archive.writestr("cat/a.png", png(13))
    return path


def _tar_with(path: Path, kind: bytes, linkname: str = "") -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in SIBLING.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        special = tarfile.TarInfo("cat/special.png")
        special.type, special.linkname = kind, linkname
        archive.addfile(special)
    return path


def _folder_with(path: Path, make) -> Path:
    for name, data in SIBLING.items():
        write(path / name, data)
    make(path)
    return path


def _bad_label_folder(label: str):
    return lambda tmp, name: _folder_with(tmp / name, lambda p: write(p / label / "x.png", png(14)))


BAD_DROPS = {
    "unsupported.rar": (
        lambda tmp, name: write(tmp / name, b"Rar!\x1a\x07\x00"),
        "unsupported_drop",
    ),
    "garbage.zip": (lambda tmp, name: write(tmp / name, b"PK not really a zip"), "corrupt_archive"),
    "cut.tar.gz": (
        lambda tmp, name: write(
            tmp / name,
            tar_drop(
                tmp / "whole.tgz.src",
                {**SIBLING, "cat/n.png": encode(Image.effect_noise((200, 200), 90).convert("RGB"))},
            ).read_bytes()[:900],
        ),
        "corrupt_archive",
    ),
    "dotdot.zip": (
        lambda tmp, name: _zip_with(tmp, name, {"cat/../../evil.png": png(15)}),
        "unsafe_path",
    ),
    "absolute.tar": (
        lambda tmp, name: tar_drop(tmp / name, {**SIBLING, "/etc/evil.png": png(15)}, "w"),
        "unsafe_path",
    ),
    "backslash.zip": (
        lambda tmp, name: _zip_with(tmp, name, {"cat\\..\\evil.png": png(15)}),
        "unsafe_path",
    ),
    "zipsymlink.zip": (lambda tmp, name: _zip_symlink(tmp / name), "link"),
    "tarsymlink.tar.gz": (
        lambda tmp, name: _tar_with(tmp / name, tarfile.SYMTYPE, "/etc/passwd"),
        "link",
    ),
    "tarhardlink.tgz": (
        lambda tmp, name: _tar_with(tmp / name, tarfile.LNKTYPE, "/etc/passwd"),
        "link",
    ),
    "foldersymlink": (
        lambda tmp, name: _folder_with(
            tmp / name, lambda p: os.symlink("/etc/passwd", p / "cat" / "l.png")
        ),
        "link",
    ),
    "tarfifo.tar.gz": (lambda tmp, name: _tar_with(tmp / name, tarfile.FIFOTYPE), "special_file"),
    "tardevice.tar.gz": (lambda tmp, name: _tar_with(tmp / name, tarfile.CHRTYPE), "special_file"),
    "folderfifo": (
        lambda tmp, name: _folder_with(tmp / name, lambda p: os.mkfifo(p / "dog" / "f.png")),
        "special_file",
    ),
    "encrypted.zip": (lambda tmp, name: _zip_encrypted(tmp / name), "encrypted"),
    "many.zip": (
        lambda tmp, name: _zip_with(tmp, name, {f"cat/{i}.png": b"x" for i in range(60)}),
        "too_many_members",
    ),
    "bytes.zip": (
        lambda tmp, name: _zip_with(
            tmp, name, {f"cat/r{i}.bin": os.urandom(2_000_000) for i in range(3)}
        ),
        "too_many_bytes",
    ),
    "bomb.zip": (
        lambda tmp, name: _zip_with(tmp, name, {"cat/zeros.bmp": bytes(2_000_000)}, compression=8),
        "compression_ratio",
    ),
    "duplicate.zip": (lambda tmp, name: _zip_duplicate(tmp / name), "duplicate_member"),
    "hidden-label": (_bad_label_folder(".git"), "bad_label"),
    "control-label": (_bad_label_folder("ca\nt"), "bad_label"),
    "colon-label": (_bad_label_folder("c:d"), "bad_label"),
    "empty": (lambda tmp, name: (tmp / name / "cat").mkdir(parents=True), "empty"),
}


@pytest.fixture(scope="module")
def drops_run(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("drops")
    config = project(tmp_path, ingest=LIMITS)
    incoming = config.data.incoming_dir
    incoming.mkdir(parents=True)
    for name, (make, _) in BAD_DROPS.items():
        make(incoming, name)
    (incoming / "whole.tgz.src").unlink(missing_ok=True)
    valid_drop(incoming / "good-folder", seed=500)
    zip_drop(incoming / "good.zip", {"wrapped/cat/z.png": png(800), "wrapped/dog/z.png": png(801)})
    tar_drop(incoming / "good.tar.gz", {"cat/t.png": png(900), "dog/t.png": png(901)})
    result = ingest_drops(config)
    return config, {d.path.rsplit("/", 1)[-1]: d for d in result.drops}


@pytest.mark.parametrize(
    "name, reason", [(k, r) for k, (_, r) in BAD_DROPS.items()], ids=list(BAD_DROPS)
)
def test_each_bad_drop_is_rejected_whole_with_its_reason(drops_run, name, reason):
    config, outcomes = drops_run
    outcome = outcomes[name]
    assert (outcome.status, outcome.reason) == ("rejected", reason)
    reasons = json.loads((Path(outcome.quarantine_path) / "reasons.json").read_text())
    assert reasons["reason"] == reason and reasons["whole_drop"] is True
    assert (Path(outcome.quarantine_path) / name).exists() or (
        Path(outcome.quarantine_path) / name
    ).is_symlink()
    assert not (config.data.incoming_dir / name).exists()
    assert name in problem(outcome) and reason in problem(outcome)


def test_valid_drops_beside_bad_ones_are_ingested_and_nothing_leaks(drops_run):
    config, outcomes = drops_run
    for name in ("good-folder", "good.zip", "good.tar.gz"):
        assert outcomes[name].status == "ingested", outcomes[name]
        assert (config.data.ingest.done_dir / name).exists()
    rows = manifest(config)
    assert len(rows) == 6 + 2 + 2  # only the good drops' images
    assert {r["label"] for r in rows} == {"cat", "dog"}  # the wrapping folder was unwrapped
    assert_store_consistent(config)
    assert not any(config.root.rglob("evil.png"))  # nothing escaped from an archive
    assert list(config.data.ingest.work_dir.iterdir()) == [
        config.data.ingest.work_dir / "ingest.lock"
    ]
