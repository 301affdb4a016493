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


def stored_files(config: Config) -> set[str]:
    images = config.data.raw_dir / "images"
    return {str(p.relative_to(config.data.raw_dir)) for p in images.rglob("*") if p.is_file()}


def assert_store_consistent(config: Config) -> None:
    """Manifest rows and stored files match one to one, and every file has its name's hash."""
    rows = manifest(config)
    assert len({r["sha256"] for r in rows}) == len(rows)
    assert {r["path"] for r in rows} == stored_files(config)
    for row in rows:
        assert sha256((config.data.raw_dir / row["path"]).read_bytes()) == row["sha256"]


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
