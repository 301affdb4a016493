"""A full disk (a small tmpfs, mounted when running as root): ingest, the model bundle and
checkpoints end in one line naming the path, leave nothing half-written, and the rerun
after space is freed completes (issue 15: ENOSPC tracebacks, torch's `unexpected pos`)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.faults.report import record
from tests.helpers import run_cli
from tests.ingest_corpus import assert_store_consistent, manifest, project
from visionloop.artifacts.bundle import BundleMeta, save_bundle
from visionloop.errors import os_error_line
from visionloop.training.checkpoint import list_checkpoints, save_checkpoint


@pytest.fixture
def small_disk(tmp_path):
    """A 1 MiB tmpfs; skipped (saying why) unless this process may mount one."""
    if os.geteuid() != 0:
        pytest.skip("disk-full faults need root to mount a small tmpfs; run as root to try them")
    mount = tmp_path / "small"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)])
    if done.returncode != 0:
        pytest.skip("`mount -t tmpfs` failed here (no CAP_SYS_ADMIN in this container)")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def grow(mount: Path) -> None:
    """Free space: the same tmpfs, made larger (what `rm` of other files would do)."""
    subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)


def noise_png(path: Path, seed: int) -> None:
    pixels = np.random.default_rng(seed).integers(0, 256, (160, 160, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)  # noise does not compress: ~77 KB each


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.rglob(".*") if p.name.endswith(".tmp") or p.is_dir()]


def test_ingest_on_a_full_disk_is_one_line_then_completes(tmp_path, small_disk):
    config = project(
        tmp_path,
        raw_dir=str(small_disk / "raw"),
        ingest={"work_dir": str(small_disk / ".ingest")},
    )
    drop = config.data.incoming_dir / "big"
    for i in range(24):  # ~1.8 MB: does not fit in 1 MiB
        noise_png(drop / ("cat" if i % 2 else "dog") / f"{i}.png", i)
    params = str(config.root / "params.yaml")
    full = run_cli("--params", params, "data", "ingest", "-q")
    lines = full.stderr.strip().splitlines()
    assert full.returncode == 1 and "Traceback" not in full.stderr, full.stderr
    assert len(lines) == 1 and "No space left on device" in lines[0], full.stderr
    assert str(small_disk) in lines[0] and "free space" in lines[0]
    assert manifest(config) == [] and drop.is_dir()  # nothing committed, the drop kept

    grow(small_disk)
    again = run_cli("--params", params, "data", "ingest", "-q")
    assert again.returncode == 0, again.stderr
    assert len(manifest(config)) == 24
    assert_store_consistent(config)
    assert sorted(p.name for p in config.data.ingest.work_dir.iterdir()) == ["ingest.lock"]

    # The same disk mounted read-only: one line naming it (EROFS), the store as it was.
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    noise_png(config.data.incoming_dir / "later" / "cat" / "x.png", 99)
    readonly = run_cli("--params", params, "data", "ingest", "-q")
    lines = readonly.stderr.strip().splitlines()
    assert readonly.returncode == 1 and len(lines) == 1, readonly.stderr
    assert "Read-only file system" in lines[0] and "remount" in lines[0], lines
    assert len(manifest(config)) == 24
    record("faults", "disk full, then read-only: ingest (tmpfs)", 2, 2)


def test_bundle_and_checkpoint_on_a_full_disk_fail_whole_with_the_disk_named(small_disk):
    model = torch.nn.Linear(400, 1000)  # 1.6 MB of weights: more than the disk holds
    meta = BundleMeta("simple_cnn", ("a", "b"), 16, (0.5,) * 3, (0.2,) * 3)
    with pytest.raises(OSError) as raised:
        save_bundle(small_disk / "model", model, meta)
    assert "No space left on device" in os_error_line(raised.value)
    assert not (small_disk / "model").exists() and not leftovers(small_disk)

    with pytest.raises(OSError) as raised:
        save_checkpoint(small_disk / "ckpt", 1, {"model": model.state_dict()})
    assert "No space left on device" in os_error_line(raised.value)
    assert list_checkpoints(small_disk / "ckpt") == [] and not leftovers(small_disk)
    record("faults", "disk full: model bundle and checkpoint (tmpfs)", 2, 2)
