"""How the raw store's layout scales under DVC: the measurement behind the shard layout.

    python bench/layout.py [--images 60000] [--drops 10] [--new 100] [--bytes 3000]

Builds three git + DVC repositories in a temporary folder, each holding the same images
(random bytes of about --bytes each, in --drops drops), laid out three ways:

  files    data/raw/images/<sha[:2]>/<sha>      one tracked folder, data/raw.dvc (the old layout)
  folders  data/raw/<drop>/<sha[:2]>/<sha>      one tracked folder per drop, one .dvc file each
  shards   data/raw/shards/<drop>.tar           one uncompressed tar per drop, data/raw.dvc

and times, side by side in one run: `dvc status` with nothing changed (median of 3), then a
new drop of --new images (`dvc add` of what changed), and the `dvc push` after it, with the
number of objects it sent (counted in the local remote). DVC only: no visionloop code runs.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

LAYOUTS = ("files", "folders", "shards")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--drops", type=int, default=10)
    parser.add_argument("--new", type=int, default=100, help="images in the new drop")
    parser.add_argument("--bytes", type=int, default=3000, help="bytes per image, about")
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vl-layout-"))
    try:
        results = {layout: measure(work / layout, layout, args) for layout in LAYOUTS}
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print()
    print(
        f"{args.images} images in {args.drops} drops, then a drop of {args.new}; "
        f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores"
    )
    header = ("layout", "first add", "no-op status", "add new drop", "push new drop", "objects")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for layout, r in results.items():
        print(
            f"| {layout} | {r['first_add']:.1f} s | {r['status']:.2f} s | {r['add']:.2f} s "
            f"| {r['push']:.2f} s | {r['objects']} |"
        )
    base = results["files"]
    for layout in ("folders", "shards"):
        r = results[layout]
        print(
            f"{layout} / files: no-op status {r['status'] / base['status']:.2f}, "
            f"add {r['add'] / base['add']:.2f}, push {r['push'] / base['push']:.2f}"
        )


def measure(root: Path, layout: str, args: argparse.Namespace) -> dict:
    repo = new_repo(root)
    per_drop = args.images // args.drops
    seed = 0
    for drop in range(args.drops):
        write_drop(repo, layout, f"drop{drop:03d}", range(seed, seed + per_drop), args.bytes)
        seed += per_drop
    first_add = timed(lambda: dvc(repo, "add", *targets(repo, layout)))
    git_commit(repo, "drops")
    dvc(repo, "push", "-q")
    status = statistics.median(timed(lambda: dvc(repo, "status")) for _ in range(3))

    new = range(seed, seed + args.new)
    write_drop(repo, layout, "drop-new", new, args.bytes)
    add_targets = [str(repo / "data" / "raw" / "drop-new")] if layout == "folders" else None
    add = timed(lambda: dvc(repo, "add", *(add_targets or targets(repo, layout))))
    git_commit(repo, "new drop")
    before = remote_objects(repo)
    push = timed(lambda: dvc(repo, "push", "-q"))
    objects = len(remote_objects(repo) - before)
    print(
        f"{layout}: first add {first_add:.1f} s, status {status:.2f} s, add {add:.2f} s, "
        f"push {push:.2f} s ({objects} objects)",
        flush=True,
    )
    shutil.rmtree(root, ignore_errors=True)  # disk is shared: free it before the next layout
    return {"first_add": first_add, "status": status, "add": add, "push": push, "objects": objects}


def new_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc(root, "init", "-q")
    dvc(root, "config", "core.autostage", "true")
    dvc(root, "remote", "add", "-d", "local", str(root.parent / f"{root.name}-remote"))
    return root


def payload(seed: int, size: int) -> bytes:
    """Distinct bytes per seed, about `size` long (images' sizes vary a little)."""
    block = hashlib.sha256(str(seed).encode()).digest()
    length = size + seed % 512
    return (block * (length // len(block) + 1))[:length]


def write_drop(repo: Path, layout: str, name: str, seeds: range, size: int) -> None:
    raw = repo / "data" / "raw"
    blobs = [payload(seed, size) for seed in seeds]
    if layout == "shards":
        (raw / "shards").mkdir(parents=True, exist_ok=True)
        with tarfile.open(raw / "shards" / f"{name}.tar", "w", format=tarfile.USTAR_FORMAT) as tar:
            for blob in blobs:
                info = tarfile.TarInfo(hashlib.sha256(blob).hexdigest())
                info.size = len(blob)
                tar.addfile(info, io.BytesIO(blob))
        return
    folder = raw / "images" if layout == "files" else raw / name
    for blob in blobs:
        sha = hashlib.sha256(blob).hexdigest()
        path = folder / sha[:2] / sha
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(blob)


def targets(repo: Path, layout: str) -> list[str]:
    raw = repo / "data" / "raw"
    if layout == "folders":
        return sorted(str(p) for p in raw.iterdir() if p.is_dir())
    return [str(raw)]


def remote_objects(repo: Path) -> set[str]:
    remote = repo.parent / f"{repo.name}-remote"
    return {str(p) for p in remote.rglob("*") if p.is_file()} if remote.exists() else set()


def dvc(repo: Path, *args: str) -> None:
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )


def git_commit(repo: Path, message: str) -> None:
    env = dict(
        os.environ,
        GIT_AUTHOR_NAME="b",
        GIT_AUTHOR_EMAIL="b@example.com",
        GIT_COMMITTER_NAME="b",
        GIT_COMMITTER_EMAIL="b@example.com",
    )
    subprocess.run(["git", "add", "-A"], cwd=repo, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=repo, env=env, check=True)


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


if __name__ == "__main__":
    main()
