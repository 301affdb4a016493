"""The prepare stage: decode and resize every split image once, into uint8 tensors on disk.

Output (`prepare.dir`, a DVC out): one folder per split in the `visionloop.prepared` format,
read with mmap every epoch, plus `stats.json` (train mean/std per channel, the class map,
the size and resize rule). DVC deletes that folder before each rerun, so the decoding work
lives in a separate content-keyed cache (`prepare.cache_dir`, not a DVC out): a shard of
decoded images per batch of new images, found again by sha256. A new drop decodes only its
new images; deleting the cache is always safe (it is rebuilt).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

import visionloop.images
from visionloop.artifacts import prepared, raw_store
from visionloop.artifacts.prepared import SPLITS, open_prepared_split, write_prepared_split
from visionloop.artifacts.split_table import Row, read_split
from visionloop.atomic import open_atomic, write_text_atomic
from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.images import load_for_model
from visionloop.progress import track
from visionloop.training.recipe import choose_recipe, facts_from_tables

SHARD_BYTES = 256 * 2**20  # decoded images held in memory before a shard is written


def run(config: Config) -> dict[str, Any]:
    """Decode what the cache lacks, then write every split and the train stats.

    With `prepare.image_size: auto` the side comes from the recipe chooser, from the
    manifest's image sizes and the split; the facts it used go into stats.json, so training
    chooses the rest of its recipe from the same facts.
    """
    params = config.prepare
    started = time.perf_counter()
    rows = [row for row in read_split(config.split.dir) if row.split in SPLITS]
    class_map_version, classes = raw_store.require_classes(config.data.raw_dir)
    index = class_indices(rows, classes)
    facts = facts_from_tables(raw_store.require_manifest(config.data.raw_dir), rows, classes)
    size_choice = choose_recipe(facts, config).choices["prepare.image_size"]
    size = size_choice.value
    cache = TensorCache(params.cache_dir / variant_key(size, params.resize), size)
    missing = sorted({row.sha256 for row in rows} - cache.known())
    decode_seconds = cache.add(config.data.raw_dir, missing, size, params.resize)

    counts = write_splits(params.dir, rows, index, cache)
    stats = {
        **prepared.channel_stats(open_prepared_split(params.dir, "train").images),
        "image_size": size,
        "resize": params.resize,
        "classes": classes,
        "class_map_version": class_map_version,
        "images": counts,
        "facts": facts.to_json(),
    }
    prepared.write_stats(params.dir, stats)
    return {
        "image_size": size,
        "image_size_reason": size_choice.reason or "set in params.yaml",
        "images": counts,
        "decoded": len(missing),
        "from_cache": len(rows) - len(missing),
        "decode_images_per_s": round(len(missing) / decode_seconds, 1) if missing else None,
        "seconds": round(time.perf_counter() - started, 2),
    }


def class_indices(rows: list[Row], classes: list[str]) -> dict[str, int]:
    """label -> position in the class map; every label of the split must be in it."""
    index = {label: i for i, label in enumerate(classes)}
    unknown = sorted({row.label for row in rows} - set(index))
    if unknown:
        raise VisionloopError(
            f"labels {unknown[:5]} are not in classes.json; re-run ingest, then split"
        )
    return index


def write_splits(
    prepared_dir: Path, rows: list[Row], index: dict[str, int], cache: TensorCache
) -> dict[str, int]:
    """Each split in the `visionloop.prepared` format, rows in split.csv order."""
    prepared_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        chosen = [row for row in rows if row.split == split]
        shas = [row.sha256 for row in chosen]
        labels = np.array([index[row.label] for row in chosen], dtype=np.int64)
        gathered = prepared_dir / f".gather-{split}.npy"
        try:
            write_prepared_split(prepared_dir, split, cache.gather(shas, gathered), labels, shas)
        finally:
            gathered.unlink(missing_ok=True)
        counts[split] = len(chosen)
    return counts


def variant_key(size: int, resize: str) -> str:
    """Cache folder name: changes when the size, the resize mode or the decode code change."""
    rule = Path(visionloop.images.__file__).read_bytes()
    text = json.dumps({"size": size, "resize": resize}, sort_keys=True)
    return hashlib.sha256(text.encode() + rule).hexdigest()[:16]


class TensorCache:
    """Decoded images in shards: `<digest>.npy` (N x S x S x 3 uint8) + `<digest>.txt` (sha256s).

    A shard's .txt is written after its .npy, both atomically, so a shard is either listed
    whole or not at all. Shards are named by their content, so two runs never clash.
    """

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size
        self._index: dict[str, tuple[str, int]] | None = None

    def index(self) -> dict[str, tuple[str, int]]:
        if self._index is None:
            self._index = {}
            for listing in sorted(self.folder.glob("*.txt")):
                for row, sha in enumerate(listing.read_text().split()):
                    self._index[sha] = (listing.stem, row)
        return self._index

    def known(self) -> set[str]:
        return set(self.index())

    def add(self, raw_dir: Path, shas: list[str], size: int, resize: str) -> float:
        """Decode and store the given images; return the seconds spent."""
        if not shas:
            return 0.0
        started = time.perf_counter()
        paths = raw_store.locate_images(raw_dir, shas)
        per_shard = max(1, SHARD_BYTES // (self.size * self.size * 3))
        batches = [shas[start : start + per_shard] for start in range(0, len(shas), per_shard)]
        load = partial(load_for_model, size=size, mode=resize)
        # Pillow releases the GIL while decoding and resizing, so threads use every core.
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            # one batch in flight at a time, so memory holds at most one shard
            decoded = chain.from_iterable(pool.map(load, [paths[s] for s in b]) for b in batches)
            images = track(decoded, len(shas), "decoding")
            for batch in batches:
                self._write_shard(batch, np.stack([next(images) for _ in batch]))
        return time.perf_counter() - started

    def _write_shard(self, shas: list[str], images: np.ndarray) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("\n".join(shas).encode()).hexdigest()[:16]
        with open_atomic(self.folder / f"{name}.npy") as handle:
            np.save(handle, images)
        write_text_atomic(self.folder / f"{name}.txt", "".join(f"{s}\n" for s in shas))
        index = self.index()
        index.update({sha: (name, row) for row, sha in enumerate(shas)})

    def gather(self, shas: list[str], out: Path) -> np.ndarray:
        """The given images in order, as a memmap at `out` (memory stays bounded)."""
        shape = (len(shas), self.size, self.size, 3)
        target = np.lib.format.open_memmap(out, mode="w+", dtype=np.uint8, shape=shape)
        rows_by_shard: dict[str, list[tuple[int, int]]] = defaultdict(list)
        index = self.index()
        for position, sha in enumerate(shas):
            shard, row = index[sha]
            rows_by_shard[shard].append((position, row))
        for shard, pairs in rows_by_shard.items():
            source = np.load(self.folder / f"{shard}.npy", mmap_mode="r")
            positions, rows = (np.array(column) for column in zip(*pairs, strict=True))
            target[positions] = source[rows]
        target.flush()
        return target
