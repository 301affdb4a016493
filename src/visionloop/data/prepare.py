"""The prepare stage: decode and resize every split image once, into uint8 tensors on disk.

Output (`prepare.dir`, a DVC out): one folder per split in the `visionloop.prepared` format,
read with mmap every epoch, plus `stats.json` (train mean/std per channel, the class map,
the size and resize rule). DVC deletes that folder before each rerun, so the decoding work
lives in a separate content-keyed cache (`prepare.cache_dir`, not a DVC out): a file of
decoded images per batch of new images, found again by sha256. A new drop decodes only its
new images; deleting the cache is always safe (it is rebuilt).

Images are read straight from the drops' shards at the manifest's offsets (nothing is
extracted) and decoded in worker processes, a few chunks at a time; the splits are written
a chunk at a time, so memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from array import array
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

import visionloop.images
from visionloop.artifacts import prepared, raw_store
from visionloop.artifacts.prepared import SPLITS, ChannelHistogram, write_prepared_chunks
from visionloop.artifacts.split_table import read_assignments
from visionloop.atomic import open_atomic, write_text_atomic
from visionloop.config import Config, PrepareConfig
from visionloop.data.parallel import CHUNK, default_workers, map_member_chunks
from visionloop.errors import VisionloopError
from visionloop.images import load_for_model
from visionloop.progress import track
from visionloop.training.recipe import DataFacts, choose_recipe, facts_from_tables

SHARD_BYTES = 256 * 2**20  # decoded images per cache file, at most
GATHER_ROWS = 1024  # images copied from the cache per chunk of a split


def run(config: Config) -> dict[str, Any]:
    """Decode what the cache lacks, then write every split and the train stats.

    With `prepare.image_size: auto` the side comes from the recipe chooser, from the
    manifest's image sizes and the split; the facts it used go into stats.json, so training
    chooses the rest of its recipe from the same facts.
    """
    params = config.prepare
    started = time.perf_counter()
    class_map_version, classes = raw_store.require_classes(config.data.raw_dir)
    splits = assignments(config.split.dir, classes)
    facts = split_facts(config.data.raw_dir, splits, classes)
    size_choice = choose_recipe(facts, config).choices["prepare.image_size"]
    size = size_choice.value
    cache = TensorCache(params.cache_dir / variant_key(size, params.resize), size)
    known = cache.index()
    missing = sorted({sha for shas, _ in splits.values() for sha in shas if sha not in known})
    decode_seconds = cache.add(config.data.raw_dir, missing, size, params)

    counts, train_stats = write_splits(params.dir, splits, cache)
    stats = {
        **train_stats,
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
        "from_cache": sum(counts.values()) - len(missing),
        "decode_images_per_s": round(len(missing) / decode_seconds, 1) if missing else None,
        "seconds": round(time.perf_counter() - started, 2),
    }


def assignments(split_dir: Path, classes: list[str]) -> dict[str, tuple[list[str], np.ndarray]]:
    """Per split: its sha256s in split.csv order and their positions in the class map (every
    label of the split must be in it)."""
    index = {label: i for i, label in enumerate(classes)}
    shas: dict[str, list[str]] = {split: [] for split in SPLITS}
    labels = {split: array("q") for split in SPLITS}
    unknown = set()
    for sha, label, split in read_assignments(split_dir):
        if split not in shas:
            continue  # excluded
        if label not in index:
            unknown.add(label)
            continue
        shas[split].append(sha)
        labels[split].append(index[label])
    if unknown:
        raise VisionloopError(
            f"labels {sorted(unknown)[:5]} are not in classes.json; re-run ingest, then split"
        )
    return {split: (shas[split], np.array(labels[split], dtype=np.int64)) for split in SPLITS}


def split_facts(
    raw_dir: Path, splits: dict[str, tuple[list[str], np.ndarray]], classes: list[str]
) -> DataFacts:
    """What the recipe chooser decides from: the train images' classes and stored sizes."""
    train_shas, train_labels = splits["train"]
    stored = raw_store.stored_rows(raw_dir, {sha: sha for sha in train_shas})
    return facts_from_tables(train_labels, len(splits["val"][0]), stored, classes)


def write_splits(
    prepared_dir: Path, splits: dict[str, tuple[list[str], np.ndarray]], cache: TensorCache
) -> tuple[dict[str, int], dict[str, list[float]]]:
    """Each split in the `visionloop.prepared` format, rows in split.csv order; the train
    split's channel stats, counted while it is written."""
    counts, train = {}, ChannelHistogram()
    shape = (cache.size, cache.size, 3)
    for split, (shas, labels) in splits.items():
        chunks = cache.gather(shas)
        if split == "train":
            chunks = map(train.add, chunks)
        write_prepared_chunks(prepared_dir, split, chunks, shape, labels, shas)
        counts[split] = len(shas)
    return counts, train.stats()


def variant_key(size: int, resize: str) -> str:
    """Cache folder name: changes when the size, the resize mode or the decode code change."""
    rule = Path(visionloop.images.__file__).read_bytes()
    text = json.dumps({"size": size, "resize": resize}, sort_keys=True)
    return hashlib.sha256(text.encode() + rule).hexdigest()[:16]


def decode_members(
    raw_dir: Path, members: list[raw_store.Member], size: int, mode: str
) -> np.ndarray:
    """Stored images, read from their shards, as uint8 (N, size, size, 3): in a worker."""
    out = np.empty((len(members), size, size, 3), dtype=np.uint8)
    for position, (_, data) in enumerate(raw_store.read_members(raw_dir, members)):
        out[position] = load_for_model(data, size, mode)
    return out


class TensorCache:
    """Decoded images in files: `<digest>.npy` (N x S x S x 3 uint8) + `<digest>.txt` (sha256s).

    A file's .txt is written after its .npy, both atomically, so a file is either listed
    whole or not at all. Files are named by their content, so two runs never clash.
    """

    def __init__(self, folder: Path, size: int) -> None:
        self.folder = folder
        self.size = size
        self._files: list[str] = []
        self._index: dict[str, int] | None = None  # sha256 -> file number << 32 | row

    @property
    def image_bytes(self) -> int:
        return self.size * self.size * 3

    def index(self) -> dict[str, int]:
        if self._index is None:
            self._index = {}
            for listing in sorted(self.folder.glob("*.txt")):
                self._list(listing.stem, listing.read_text().split())
        return self._index

    def _list(self, name: str, shas: list[str]) -> None:
        number = len(self._files) << 32
        self._files.append(name)
        self.index().update({sha: number | row for row, sha in enumerate(shas)})

    def locate(self, sha: str) -> tuple[str, int]:
        packed = self.index()[sha]
        return self._files[packed >> 32], packed & 0xFFFFFFFF

    def add(self, raw_dir: Path, shas: list[str], size: int, params: PrepareConfig) -> float:
        """Decode and store the given images; return the seconds spent."""
        if not shas:
            return 0.0
        started = time.perf_counter()
        members = raw_store.reading_order(raw_store.stored_members(raw_dir, shas).values())
        decode = partial(decode_members, size=size, mode=params.resize)
        workers = default_workers(params.workers)
        decoded = track(
            map_member_chunks(decode, raw_dir, members, workers),
            -(-len(members) // CHUNK),
            f"decoding {len(members)} images",
        )
        # whole chunks per file, so each file takes the next chunks as they come
        per_file = max(1, SHARD_BYTES // self.image_bytes // CHUNK) * CHUNK
        for start in range(0, len(members), per_file):
            batch = [m.sha256 for m in members[start : start + per_file]]
            self._write_file(batch, (next(decoded) for _ in range(-(-len(batch) // CHUNK))))
        return time.perf_counter() - started

    def _write_file(self, shas: list[str], chunks: Iterator[np.ndarray]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        name = hashlib.sha256("\n".join(shas).encode()).hexdigest()[:16]
        shape = (len(shas), self.size, self.size, 3)
        with open_atomic(self.folder / f"{name}.npy") as handle:
            header = {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": shape}
            np.lib.format.write_array_header_1_0(handle, header)
            for chunk in chunks:
                handle.write(chunk.data)
        write_text_atomic(self.folder / f"{name}.txt", "".join(f"{s}\n" for s in shas))
        self._list(name, shas)

    def gather(self, shas: list[str]) -> Iterator[np.ndarray]:
        """The given images in order, GATHER_ROWS at a time, read row by row from the cache
        files (no mmap: memory holds one chunk, whatever the number of images)."""
        files: dict[str, tuple[int, int]] = {}  # name -> (descriptor, where row 0 starts)
        try:
            for start in range(0, len(shas), GATHER_ROWS):
                part = shas[start : start + GATHER_ROWS]
                chunk = np.empty((len(part), self.size, self.size, 3), dtype=np.uint8)
                for position, sha in enumerate(part):
                    name, row = self.locate(sha)
                    if name not in files:
                        files[name] = self._open(name)
                    fd, data_start = files[name]
                    raw = os.pread(fd, self.image_bytes, data_start + row * self.image_bytes)
                    chunk[position] = np.frombuffer(raw, np.uint8).reshape(chunk.shape[1:])
                yield chunk
        finally:
            for fd, _ in files.values():
                os.close(fd)

    def _open(self, name: str) -> tuple[int, int]:
        path = self.folder / f"{name}.npy"
        with path.open("rb") as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                np.lib.format.read_array_header_1_0(handle)
            else:
                np.lib.format.read_array_header_2_0(handle)
            data_start = handle.tell()
        return os.open(path, os.O_RDONLY), data_start
