"""A stand-in for ingest in tests: real image files and a manifest in ingest's format.

It writes what docs/layout.md promises ingest writes (content-addressed images, manifest.csv,
classes.json) so the split and prepare stages can be tested before and apart from ingest.
Swap it for the real `visionloop data ingest` where a test needs the whole flow.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image

MANIFEST_COLUMNS = (
    "sha256",
    "label",
    "source_name",
    "drop_id",
    "format",
    "mode",
    "width",
    "height",
    "ingested_at",
)
EXTENSIONS = {"PNG": "png", "JPEG": "jpg"}
START = datetime(2026, 1, 1, tzinfo=UTC)


def encode(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def pattern_image(seed: int, size: int = 32, mode: str = "RGB") -> Image.Image:
    """A random blocky picture: distinct seeds give perceptually distinct images."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, size=(8, 8, 3), dtype=np.uint8)
    image = Image.fromarray(blocks).resize((size, size), Image.Resampling.NEAREST)
    return image.convert(mode)


def near_copy(image: Image.Image, shift: int = 3) -> Image.Image:
    """The same picture, slightly brighter: different bytes, same perceptual hash (nearly)."""
    pixels = np.asarray(image, dtype=np.int16) + shift
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def add_drop(
    raw_dir: Path,
    drop_id: str,
    images: Iterable[tuple[str, Image.Image]],
    fmt: str = "PNG",
) -> list[str]:
    """Store (label, image) pairs as one drop, append them to the manifest; return their sha256."""
    manifest = raw_dir / "manifest.csv"
    rows = read_rows(manifest)
    known = {row["sha256"] for row in rows}
    ingested_at = (START + timedelta(minutes=len({r["drop_id"] for r in rows}))).isoformat()
    shas = []
    for index, (label, image) in enumerate(images):
        data = encode(image, fmt)
        sha = hashlib.sha256(data).hexdigest()
        shas.append(sha)
        if sha in known:
            continue
        known.add(sha)
        path = raw_dir / "images" / sha[:2] / f"{sha}.{EXTENSIONS[fmt]}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        rows.append(
            {
                "sha256": sha,
                "label": label,
                "source_name": f"{label}/{index:05d}.{EXTENSIONS[fmt]}",
                "drop_id": drop_id,
                "format": fmt,
                "mode": image.mode,
                "width": str(image.width),
                "height": str(image.height),
                "ingested_at": ingested_at,
            }
        )
    write_rows(manifest, rows)
    write_classes(raw_dir, [row["label"] for row in rows])
    return shas


def remove_images(raw_dir: Path, shas: Iterable[str]) -> None:
    """Drop rows from the manifest, as ingest does for a later label conflict."""
    gone = set(shas)
    manifest = raw_dir / "manifest.csv"
    write_rows(manifest, [row for row in read_rows(manifest) if row["sha256"] not in gone])


def write_classes(raw_dir: Path, labels: Iterable[str]) -> None:
    """classes.json: known classes keep their index, new ones are appended."""
    path = raw_dir / "classes.json"
    current = json.loads(path.read_text()) if path.exists() else {"version": 0, "classes": []}
    classes = list(current["classes"])
    classes += sorted(set(labels) - set(classes))
    if classes != current["classes"]:
        path.write_text(json.dumps({"version": current["version"] + 1, "classes": classes}))


def read_rows(manifest: Path) -> list[dict[str, str]]:
    if not manifest.exists():
        return []
    return list(csv.DictReader(io.StringIO(manifest.read_text(encoding="utf-8"))))


def write_rows(manifest: Path, rows: list[dict[str, str]]) -> None:
    manifest.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=MANIFEST_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    manifest.write_text(buffer.getvalue(), encoding="utf-8")


def digits_drops(incoming: Path) -> dict[str, list[tuple[str, Image.Image]]]:
    """The demo drops written by `visionloop data demo`, read back as (label, image) lists."""
    drops = {}
    for drop in sorted(p for p in incoming.iterdir() if p.is_dir()):
        drops[drop.name] = [
            (path.parent.name, Image.open(path).convert("RGB"))
            for path in sorted(drop.rglob("*.png"))
        ]
    return drops
