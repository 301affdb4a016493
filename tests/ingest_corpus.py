"""Real files for ingest tests: valid images, every kind of bad input, hostile archives."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

import yaml
from PIL import Image

from tests.helpers import REPO_PARAMS
from visionloop.config import Config, load_config


def project(tmp_path: Path, **data_overrides) -> Config:
    """A copy of the repo's params in tmp_path (so every path lands there), DVC off by default."""
    params = yaml.safe_load(REPO_PARAMS.read_text())
    params["data"]["dvc"]["track"] = False
    params["data"]["ingest"]["workers"] = 2
    _merge(params["data"], data_overrides)
    path = tmp_path / "params.yaml"
    tmp_path.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return load_config(path)


def _merge(base: dict, extra: dict) -> None:
    for key, value in extra.items():
        if isinstance(value, dict):
            _merge(base.setdefault(key, {}), value)
        else:
            base[key] = value


def encode(image: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **kwargs)
    return buffer.getvalue()


def png(seed: int, size: tuple[int, int] = (16, 16)) -> bytes:
    """A distinct small PNG per seed."""
    colour = (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
    image = Image.new("RGB", size, colour)
    image.putpixel((0, 0), (seed % 256, (seed // 256) % 256, 7))
    return encode(image)


def jpeg(seed: int, size: tuple[int, int] = (24, 24)) -> bytes:
    image = Image.new("RGB", size, (seed * 13 % 256, 40, 200))
    image.putpixel((1, 1), (seed % 256, (seed // 256) % 256, 0))
    return encode(image, "JPEG", quality=90)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def valid_drop(folder: Path, labels=("cat", "dog"), per_label: int = 3, seed: int = 0) -> Path:
    for li, label in enumerate(labels):
        for i in range(per_label):
            write(folder / label / f"img-{i}.png", png(seed + li * 100 + i))
    return folder


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def manifest(config: Config) -> list[dict[str, str]]:
    path = config.data.raw_dir / "manifest.csv"
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def report(config: Config, drop_id: str) -> dict:
    (path,) = config.data.ingest.report_dir.glob(f"*-{drop_id}.json")
    return json.loads(path.read_text())


def shard_members(config: Config) -> dict[tuple[str, str], tuple[tarfile.TarInfo, bytes]]:
    """(drop_id, member name) -> (its tar header, its bytes), read with the tarfile module."""
    found = {}
    for shard in sorted((config.data.raw_dir / "shards").glob("*")):
        assert shard.suffix == ".tar" and not shard.name.startswith("."), shard  # no leftovers
        with tarfile.open(shard) as tar:
            for info in tar:
                found[(shard.stem, info.name)] = (info, tar.extractfile(info).read())
    return found


def assert_store_consistent(config: Config) -> None:
    """Manifest rows and shard members match: every row's member is in its drop's shard at
    the recorded offset, with its name's hash; every other member was taken out for a label
    conflict (shards never change); no image is stored outside a shard."""
    rows = manifest(config)
    assert len({r["sha256"] for r in rows}) == len(rows)
    assert not (config.data.raw_dir / "images").exists()
    members = shard_members(config)
    listed = {(r["drop_id"], r["member"]) for r in rows}
    assert listed <= set(members)
    banned = json.loads((config.data.raw_dir / "drops.json").read_text())["label_conflicts"]
    assert {name.split(".")[0] for _, name in set(members) - listed} <= set(banned)
    for row in rows:
        info, data = members[(row["drop_id"], row["member"])]
        assert (info.offset_data, info.size) == (int(row["offset"]), int(row["bytes"]))
        assert sha256(data) == row["sha256"] and row["member"].startswith(row["sha256"])


def zip_drop(path: Path, members: dict[str, bytes], **kwargs) -> Path:
    with zipfile.ZipFile(path, "w", **kwargs) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def tar_drop(path: Path, members: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def copy_tree(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, symlinks=True)
    return target
