"""Damaged checkpoints and candidate bundles, as a full disk, a bad copy or a hostile file
leave them: training falls back to the last good checkpoint, and a bundle that cannot be
read is refused in one line (issue 15: 47- and 68-line tracebacks)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.faults.report import record
from visionloop.artifacts.bundle import (
    META_FILE,
    WEIGHTS_FILE,
    BundleDamaged,
    BundleMeta,
    save_bundle,
)
from visionloop.models.classifier import load_bundle
from visionloop.models.zoo import build_model
from visionloop.training.checkpoint import checkpoint_path, load_latest_checkpoint, save_checkpoint


class Payload:
    def __reduce__(self):
        return (print, ("payload ran",))


def truncated(data: bytes, rng) -> bytes:
    return data[: rng.randrange(1, len(data))]


def flipped(data: bytes, rng) -> bytes:
    out = bytearray(data)
    out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def zeroed(data: bytes, rng) -> bytes:
    start = rng.randrange(len(data) // 2)
    return data[:start] + bytes(len(data) - start)


DAMAGE = {"truncated": truncated, "bit flip": flipped, "zeroed tail": zeroed}


def test_damaged_checkpoints_fall_back_to_the_last_good_one(tmp_path, rng, capsys):
    for name, damage in [*DAMAGE.items(), ("empty", lambda d, r: b"")]:
        folder = tmp_path / name.replace(" ", "-")
        save_checkpoint(folder, 1, {"epoch": 1, "w": torch.ones(64)})
        save_checkpoint(folder, 2, {"epoch": 2, "w": torch.ones(64)})
        latest = checkpoint_path(folder, 2)
        latest.write_bytes(damage(latest.read_bytes(), rng))
        _, state = load_latest_checkpoint(folder)
        assert state["epoch"] == 1, name
    folder = tmp_path / "payload"  # a valid sidecar over a pickle payload
    save_checkpoint(folder, 1, {"epoch": 1})
    save_checkpoint(folder, 2, {"epoch": 2, "x": Payload()})
    assert load_latest_checkpoint(folder)[1]["epoch"] == 1
    assert "payload ran" not in capsys.readouterr().out
    record("inputs", "damaged checkpoints (truncated, bit flip, zeroed, empty, pickle)", 5, 5)


def test_unreadable_candidate_bundles_are_refused_in_one_line(tmp_path, rng):
    meta = BundleMeta("simple_cnn", ("a", "b"), 16, (0.5,) * 3, (0.2,) * 3)
    good = save_bundle(tmp_path / "good", build_model("simple_cnn", 2, 16), meta)
    cases = {
        "truncated weights": lambda f: (f / WEIGHTS_FILE).write_bytes(
            truncated((f / WEIGHTS_FILE).read_bytes(), rng)
        ),
        "missing weights": lambda f: (f / WEIGHTS_FILE).unlink(),
        "pickle payload": lambda f: torch.save({"x": Payload()}, f / WEIGHTS_FILE),
        "foreign weights": lambda f: torch.save({"w": torch.ones(3)}, f / WEIGHTS_FILE),
        "broken model.json": lambda f: (f / META_FILE).write_text("{not json"),
        "model.json missing keys": lambda f: (f / META_FILE).write_text(json.dumps({"arch": 1})),
    }
    handled = 0
    for name, damage in cases.items():
        folder = tmp_path / name.replace(" ", "-")
        folder.mkdir()
        for file in (META_FILE, WEIGHTS_FILE):
            (folder / file).write_bytes((good / file).read_bytes())
        damage(folder)
        with pytest.raises(BundleDamaged) as refused:
            load_bundle(folder)
        assert "\n" not in str(refused.value) and str(folder) in str(refused.value), name
        handled += 1
    record("inputs", "unreadable candidate bundles", len(cases), handled)
