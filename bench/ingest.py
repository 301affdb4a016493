"""Ingest speed: images/s on a large drop, and whether a small drop's cost depends on the store.

    python bench/ingest.py [--images 10000] [--small 100] [--repeats 3] [--dvc] [--workers 0]

Generates JPEG drops (seeded noise + shapes, 10 classes) in a temporary folder, then, side by
side in one run:
  1. ingests the large drop into an empty store            -> images/s
  2. ingests `repeats` fresh small drops into that store   -> median seconds
  3. ingests the same small drops into empty stores         -> median seconds
     (2 and 3 interleaved, so load changes on the machine hit both alike)
and prints the ratio (2)/(3), of wall time and of CPU time (this process and its children:
less sensitive to other work on a shared machine); the target is <= 1.2 with --dvc (a
drop's cost grows with the drop, not with what is already stored). With --dvc each project
is a git + DVC repository and the times include `dvc add data/raw` (one shard per drop, the
manifest, the ledger). Not a test; run by hand.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from visionloop.config import load_config  # noqa: E402
from visionloop.data.ingest import ingest_drops  # noqa: E402
from visionloop.env import apply_offline_defaults  # noqa: E402

CLASSES = [f"class{i}" for i in range(10)]


def make_drop(folder: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for index in range(count):
        label = CLASSES[index % len(CLASSES)]
        pixels = rng.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)
        image = Image.fromarray(pixels)
        ImageDraw.Draw(image).ellipse((8, 8, 56, 40 + index % 20), fill=(index % 256, 80, 160))
        target = folder / label / f"{seed}-{index:06d}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        image.save(target, "JPEG", quality=85)
    return folder


def new_project(root: Path, dvc: bool, workers: int):
    root.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["dvc"]["track"] = dvc
    params["data"]["dvc"]["remote_url"] = None
    params["data"]["ingest"]["workers"] = workers
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    if dvc:
        run = {"cwd": root, "check": True, "capture_output": True}
        subprocess.run(["git", "init", "-q"], **run)
        shutil.copy(REPO / ".dvcignore", root / ".dvcignore")
        subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], **run)
        subprocess.run([sys.executable, "-m", "dvc", "config", "core.autostage", "true"], **run)
    return load_config(root / "params.yaml")


def timed_ingest(config, drop: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process and its children) of one ingest."""
    target = config.data.incoming_dir / drop.name
    shutil.copytree(drop, target)
    start, cpu = time.perf_counter(), _cpu_seconds()
    (outcome,) = ingest_drops(config, [target]).drops
    elapsed, used = time.perf_counter() - start, _cpu_seconds() - cpu
    assert outcome.status == "ingested", outcome
    return elapsed, used


def _cpu_seconds() -> float:
    """CPU time so far of this process and its waited-for children (git, run by DVC): less
    sensitive than wall time to other work on a shared machine."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--small", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--dvc", action="store_true", help="git + DVC projects, times include dvc add"
    )
    parser.add_argument("--workers", type=int, default=0, help="decoding threads (0 = per core)")
    args = parser.parse_args()
    apply_offline_defaults()
    with tempfile.TemporaryDirectory(prefix="visionloop-bench-") as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        big = make_drop(tmp / "drops" / "big", args.images, seed=1)
        smalls = [
            make_drop(tmp / "drops" / f"small{i}", args.small, seed=100 + i)
            for i in range(args.repeats)
        ]
        generated = args.images + args.small * args.repeats
        print(f"generated {generated} JPEGs in {time.perf_counter() - start:.1f} s")

        full = new_project(tmp / "full", args.dvc, args.workers)
        seconds, _ = timed_ingest(full, big)
        rate = args.images / seconds
        print(f"large drop: {args.images} images in {seconds:.1f} s = {rate:.0f} images/s")

        # Interleaved, so a change in the machine's load hits both sides alike.
        into_full, into_empty = [], []
        for i, drop in enumerate(smalls):
            into_full.append(timed_ingest(full, drop))
            empty = new_project(tmp / f"empty{i}", args.dvc, args.workers)
            into_empty.append(timed_ingest(empty, drop))
        small = f"{args.small}-image drop"
        dvc = "; with dvc add" if args.dvc else ""
        for what, index in (("wall", 0), ("CPU", 1)):
            full_s = statistics.median(t[index] for t in into_full)
            empty_s = statistics.median(t[index] for t in into_empty)
            shown = [t[index] for t in into_full], [t[index] for t in into_empty]
            print(
                f"{small} into {args.images} stored: {what} median {full_s:.2f} s {_all(shown[0])}"
            )
            print(f"{small} into an empty store: {what} median {empty_s:.2f} s {_all(shown[1])}")
            print(f"ratio ({what}) {full_s / empty_s:.2f} (target <= 1.2 with dvc add){dvc}")
        print(f"cpu cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")


def _all(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


if __name__ == "__main__":
    main()
