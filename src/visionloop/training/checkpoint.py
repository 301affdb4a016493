"""Checkpoints that are never half-written and never trusted blindly.

Each checkpoint is written to a temporary file in the same folder, fsynced and moved into
place with os.replace; a `.sha256` sidecar, written the same way afterwards, records its
hash. Loading verifies the hash and uses weights_only=True. A checkpoint whose sidecar is
missing or wrong (a crash between the two writes, a corrupt disk) is skipped with a
warning and the previous good one is used.
"""

from __future__ import annotations

import hashlib
import io
import logging
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from visionloop.atomic import write_bytes_atomic
from visionloop.errors import first_line

log = logging.getLogger(__name__)

PATTERN = re.compile(r"epoch-(\d{4,})\.pt")
SIDECAR_SUFFIX = ".sha256"


def checkpoint_path(folder: Path, epoch: int) -> Path:
    return folder / f"epoch-{epoch:04d}.pt"


def save_checkpoint(folder: Path, epoch: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write epoch's checkpoint and its sidecar; keep the newest `keep` checkpoints."""
    folder.mkdir(parents=True, exist_ok=True)
    path = checkpoint_path(folder, epoch)
    data = _serialise(state)
    write_bytes_atomic(path, data)
    digest = hashlib.sha256(data).hexdigest()
    write_bytes_atomic(_sidecar(path), f"{digest}  {path.name}\n".encode())
    for old in list_checkpoints(folder)[keep:]:
        _sidecar(old).unlink(missing_ok=True)
        old.unlink(missing_ok=True)
    return path


def _serialise(state: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + SIDECAR_SUFFIX)


def list_checkpoints(folder: Path) -> list[Path]:
    """Epoch checkpoints in the folder, newest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if PATTERN.fullmatch(p.name)]
    return sorted(found, key=lambda p: int(PATTERN.fullmatch(p.name).group(1)), reverse=True)


def clear_checkpoints(folder: Path) -> None:
    for path in list_checkpoints(folder):
        _sidecar(path).unlink(missing_ok=True)
        path.unlink(missing_ok=True)


def verify(path: Path) -> bytes:
    """The checkpoint's bytes if its sidecar hash matches; ValueError saying why not."""
    sidecar = _sidecar(path)
    if not sidecar.exists():
        raise ValueError(f"{path.name}: no {sidecar.name} (interrupted while saving?)")
    recorded = sidecar.read_text().split()
    expected = recorded[0] if recorded else ""
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != expected:
        raise ValueError(f"{path.name}: sha256 does not match {sidecar.name} (corrupt file)")
    return data


def load_latest_checkpoint(folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """The newest checkpoint that verifies, falling back past corrupt ones with a warning."""
    for path in list_checkpoints(folder):
        try:
            data = verify(path)
            state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (ValueError, OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            # UnpicklingError: a payload weights_only refuses (a valid sidecar proves only
            # that the file is the one written, not that it is plain tensors).
            log.warning(
                "skipping checkpoint %s: %s; falling back to the previous one",
                path,
                first_line(exc),
            )
            continue
        return path, state
    return None
