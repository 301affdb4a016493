"""`visionloop predict`: classify files, folders, globs and archives; one row per file.

Inputs are listed first (a path that does not exist stops the command before any work);
archives (.zip, .tar, .tar.gz, .tgz) are read in memory with ingest's reader and limits, never
extracted. Files are read and decoded in a thread pool by ingest's rules (`serving.inputs`),
predicted `serving.batch_size` at a time, and written as they come (CSV, JSON or JSONL; the
output file appears whole at the end). A file that cannot be read or decoded gets a row with
its reason code and never stops the batch.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import io
import json
import os
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from visionloop.atomic import open_atomic
from visionloop.config import Config, IngestConfig
from visionloop.data.ingest.readers import (
    DropReader,
    DropRejected,
    drop_kind,
    is_os_metadata,
)
from visionloop.data.ingest.reasons import FileReason
from visionloop.errors import VisionloopError
from visionloop.progress import track
from visionloop.serving.inputs import image_rules, stack, to_model_image
from visionloop.serving.reasons import BadImage
from visionloop.serving.results import describe, top_k_text
from visionloop.serving.source import LoadedModel

COLUMNS = (
    "path",
    "sha256",
    "label",
    "confidence",
    "top_k",
    "model",
    "version",
    "runtime",
    "error",
    "detail",
)
FORMATS = {".csv": "csv", ".json": "json", ".jsonl": "jsonl"}
ARCHIVE_SEPARATOR = "!/"  # photos.zip!/cats/1.jpg: a member inside an archive
LINES_EVERY = 1000  # off a terminal, one progress line per this many files


@dataclass(frozen=True)
class Item:
    """One file to predict: where it came from, and its bytes (None: why not in reason)."""

    path: str
    data: bytes | None = None
    source: Path | None = None  # a plain file, read in the worker pool
    reason: str = ""
    detail: str = ""


# ---- listing the inputs ----------------------------------------------------------------------


def list_inputs(arguments: list[str]) -> list[Path]:
    """Every argument as existing paths (globs expanded); a one-line error for one that
    matches nothing, before any work is done."""
    if not arguments:
        raise VisionloopError("give at least one file, folder, glob or archive to predict")
    paths: list[Path] = []
    for text in arguments:
        matches = sorted(glob.glob(text, recursive=True)) if glob.has_magic(text) else [text]
        found = [Path(m) for m in matches if Path(m).exists()]
        if not found:
            raise VisionloopError(f"{text}: no such file or folder")
        paths.extend(found)
    return paths


Archive = tuple[Path, DropReader | DropRejected]  # pre-scanned, or why it was refused


@dataclass
class Plan:
    units: list[Path | Archive]  # in input order: plain files and archives

    @property
    def total(self) -> int:
        return sum(
            len(unit[1].files) if isinstance(unit, tuple) and isinstance(unit[1], DropReader) else 1
            for unit in self.units
        )


def plan(paths: list[Path], rules: IngestConfig) -> Plan:
    """Folders walked (sorted, recursive), archives pre-scanned with ingest's limits."""
    units: list[Path | Archive] = []
    for path in paths:
        for file in walk(path):
            is_archive = drop_kind(file) in ("zip", "tar")
            units.append((file, open_archive(file, rules)) if is_archive else file)
    return Plan(units)


def walk(path: Path) -> Iterator[Path]:
    if not path.is_dir():
        yield path
        return
    for folder, subfolders, names in os.walk(path):
        subfolders.sort()
        for name in sorted(names):
            file = Path(folder) / name
            if not is_os_metadata(file.relative_to(path).parts):
                yield file


def open_archive(path: Path, rules: IngestConfig) -> DropReader | DropRejected:
    try:
        return DropReader(path, rules.limits)
    except DropRejected as exc:
        return exc


def items(work: Plan, rules: IngestConfig) -> Iterator[Item]:
    for unit in work.units:
        if isinstance(unit, tuple):
            yield from archive_items(*unit, rules)
        else:
            yield Item(str(unit), source=unit)


def archive_items(path: Path, reader: DropReader | DropRejected, rules: IngestConfig):
    if isinstance(reader, DropRejected):
        yield Item(str(path), reason=str(reader.reason), detail=reader.detail)
        return
    try:
        for member, data, why in reader.read_all(rules.max_file_bytes):
            if is_os_metadata(member.parts):
                continue
            name = f"{path}{ARCHIVE_SEPARATOR}{member.relpath}"
            if data is None:
                yield Item(name, reason=FileReason.FILE_TOO_LARGE, detail=why)
            else:
                yield Item(name, data=data)
    except DropRejected as exc:  # damage found while reading: the rest of it is lost
        yield Item(str(path), reason=str(exc.reason), detail=exc.detail)


# ---- predicting ------------------------------------------------------------------------------


def read_item(item: Item, rules: IngestConfig) -> Item:
    if item.source is None:
        return item
    try:
        if item.source.stat().st_size > rules.max_file_bytes:
            detail = f"larger than data.ingest.max_file_bytes ({rules.max_file_bytes})"
            return Item(item.path, reason=FileReason.FILE_TOO_LARGE, detail=detail)
        return Item(item.path, data=item.source.read_bytes())
    except OSError as exc:
        return Item(item.path, reason=FileReason.UNREADABLE, detail=exc.strerror or str(exc))


def decode_item(item: Item, model: LoadedModel, rules: IngestConfig):
    """(row without the prediction, pixels or None) for one item."""
    item = read_item(item, rules)
    row: dict[str, Any] = {"path": item.path, **model_columns(model)}
    if item.data is None:
        return {**row, "error": item.reason, "detail": item.detail}, None
    try:
        decoded = to_model_image(item.data, model.meta.image_size, model.meta.resize, rules)
    except BadImage as exc:
        sha = hashlib.sha256(item.data).hexdigest()
        return {**row, "sha256": sha, "error": exc.reason, "detail": exc.detail}, None
    return {**row, "sha256": decoded.screened.sha256}, decoded.pixels


def model_columns(model: LoadedModel) -> dict[str, str]:
    return {"model": model.ref.name, "version": model.version, "runtime": model.runtime.name}


def predict_rows(
    model: LoadedModel, work: Plan, config: Config, top_k: int, progress: bool = True
) -> Iterator[dict[str, Any]]:
    """One row per file, in input order, `batch_size` files decoded and predicted at a time."""
    rules = image_rules(config)
    settings = config.serving
    workers = settings.workers or min(8, os.cpu_count() or 1)
    stream = track(items(work, rules), work.total, "predicting", progress, every=LINES_EVERY)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        for chunk in chunks(stream, settings.batch_size):
            decoded = list(pool.map(lambda item: decode_item(item, model, rules), chunk))
            yield from predicted(model, decoded, top_k)


def predicted(model: LoadedModel, decoded: list, top_k: int) -> Iterator[dict[str, Any]]:
    meta = model.meta
    good = [pixels for _, pixels in decoded if pixels is not None]
    probs = iter(model.runtime.predict_proba(stack(good, meta.image_size), len(good) or 1))
    for row, pixels in decoded:
        if pixels is None:
            yield row
        else:
            yield {**row, **describe(next(probs), meta.classes, top_k)}


def chunks(stream: Iterator[Item], size: int) -> Iterator[list[Item]]:
    chunk: list[Item] = []
    for item in stream:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# ---- writing ---------------------------------------------------------------------------------


def output_format(output: Path | None) -> str:
    if output is None:
        return "csv"
    kind = FORMATS.get(output.suffix.lower())
    if kind is None:
        raise VisionloopError(f"{output}: unknown output format; use .csv, .json or .jsonl")
    return kind


def write_rows(rows: Iterator[dict[str, Any]], output: Path | None) -> dict[str, Any]:
    """Rows to `output` (whole, at the end) or CSV on stdout; counts of what was written."""
    kind = output_format(output)
    if output is None:
        return _write(rows, kind, sys.stdout)
    with open_atomic(output) as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        counts = _write(rows, kind, text)
        text.flush()
        text.detach()
    return counts


def _write(rows: Iterator[dict[str, Any]], kind: str, out: IO[str]) -> dict[str, Any]:
    counts: dict[str, Any] = {"files": 0, "predicted": 0, "failed": {}}
    writer = csv.DictWriter(out, fieldnames=COLUMNS, lineterminator="\n") if kind == "csv" else None
    if writer is not None:
        writer.writeheader()
    if kind == "json":
        out.write("[")
    for row in rows:
        counts["files"] += 1
        if row.get("error"):
            counts["failed"][row["error"]] = counts["failed"].get(row["error"], 0) + 1
        else:
            counts["predicted"] += 1
        full = {column: row.get(column) for column in COLUMNS}
        if writer is not None:
            writer.writerow({**full, "top_k": top_k_text(row["top_k"]) if row.get("top_k") else ""})
        elif kind == "json":
            out.write(("\n" if counts["files"] == 1 else ",\n") + json.dumps(full))
        else:
            out.write(json.dumps(full) + "\n")
    if kind == "json":
        out.write("\n]\n" if counts["files"] else "]\n")
    return counts


def summary_line(counts: dict[str, Any], model: LoadedModel, output: Path | None) -> str:
    failed = counts["failed"]
    where = f" -> {output}" if output else ""
    text = (
        f"predicted {counts['predicted']} of {counts['files']} files with {model.ref.label} "
        f"({model.runtime.name}){where}"
    )
    if failed:
        reasons = ", ".join(f"{reason} {n}" for reason, n in sorted(failed.items()))
        text += f"; {sum(failed.values())} could not be predicted: {reasons}"
    return text


def run_predict(
    config: Config,
    arguments: list[str],
    model_uri: str | None,
    top_k: int | None,
    output: Path | None,
    runtime: str | None,
    progress: bool = True,
) -> tuple[dict[str, Any], str]:
    """What `visionloop predict` does; (counts, the summary line for stderr)."""
    from visionloop.serving.source import default_uri, load_model, resolve

    output_format(output)  # a wrong suffix stops before the model is loaded
    rules = image_rules(config)
    work = plan(list_inputs(arguments), rules)
    model = load_model(config, resolve(config, model_uri or default_uri(config)), runtime)
    rows = predict_rows(model, work, config, top_k or config.serving.top_k, progress)
    counts = write_rows(rows, output)
    return counts, summary_line(counts, model, output)
