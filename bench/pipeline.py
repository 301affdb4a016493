"""Benchmark the data half of `dvc repro` (validate, split, prepare) on N generated images.

    python bench/pipeline.py --images 60000
    python bench/pipeline.py --images 600000 --drops 10 --source-size 32 --image-size 32

Builds a temporary git + DVC repository with the project's dvc.yaml, params.yaml and code,
writes N generated JPEGs as --drops drops and ingests them (`visionloop data ingest`, one
shard per drop), then times, side by side: the first `dvc repro prepare`; a no-op
`dvc repro prepare` (median of 5; targets <= 1.0 s at 60,000 images, <= 2 s at 600,000),
interleaved with the same no-op on a project of 10 images per drop and with
`dvc --version` (DVC's start-up), so that what grows with the images shows as a ratio
whatever the machine's load; `dvc status`; and after one more drop of 1% more images,
what `dvc push` sends (objects counted in the local remote) and the `dvc repro prepare`
that follows. Prepare's decode throughput (images/s) comes from the stage's own summary.
Work in /tmp, deleted after.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.rawdata import pattern_image, write_drop  # noqa: E402

REPRO = ("dvc", "repro", "prepare")  # the data half: train would retrain on every bench run


def main() -> None:
    args = parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vl-bench-"))
    try:
        run(args, work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--drops", type=int, default=10, help="the images arrive in this many")
    parser.add_argument("--source-size", type=int, default=96, help="side of generated JPEGs")
    parser.add_argument("--image-size", type=int, default=64, help="prepare.image_size")
    parser.add_argument("--keep", help="work in this folder and keep it")
    return parser.parse_args()


def run(args: argparse.Namespace, work: Path) -> None:
    env = pipeline_env()
    # The same pipeline on 10 images per drop: what DVC costs when there is nothing to see.
    small = build(work / "small", args, env, per_drop=10)
    small_first = timed_output(small, env, *REPRO)[0]
    commit(small, env, "repro")
    project = build(work / "big", args, env, per_drop=args.images // args.drops)
    count, later = args.images, max(1, args.images // 100)

    full, out = timed_output(project, env, *REPRO)
    prepare = last_summary(out)
    commit(project, env, "repro")
    push(project, env)
    # Interleaved, so a change in the machine's load hits all three alike.
    noop, noop_small, start_up = [], [], []
    for _ in range(5):
        noop.append(timed_cpu(project, env, *REPRO)[:2])
        noop_small.append(timed_cpu(small, env, *REPRO)[:2])
        start_up.append(timed_cpu(small, env, "dvc", "--version")[:2])
    status = timed_output(project, env, "dvc", "status")[0]

    generate(project, "drop-later", range(count, count + later), args.source_size)
    ingest(project, env, "drop-later")
    pushed = push(project, env)
    incremental, out = timed_output(project, env, *REPRO)
    prepare_more = last_summary(out)

    big_s, small_s = (statistics.median(t for t, _ in runs) for runs in (noop, noop_small))
    big_cpu, small_cpu, start_cpu = (
        statistics.median(c for _, c in runs) for runs in (noop, noop_small, start_up)
    )
    target = "<= 1.0 s at 60k, <= 2 s at 600k"
    tiny = args.drops * 10
    print()
    print(
        f"{'images':>32}: {count} in {args.drops} drops (+{later} in one more drop); "
        f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores"
    )
    print(f"{'first dvc repro prepare':>32}: {full:7.2f} s ({small_first:.2f} s at {tiny})")
    print(f"{'  prepare decode':>32}: {prepare['decode_images_per_s']} images/s")
    walls = [t for t, _ in noop]
    print(f"{'no-op repro prepare (median/5)':>32}: {big_s:7.2f} s  {_all(walls)} ({target})")
    print(f"{'  its CPU time':>32}: {big_cpu:7.2f} s")
    print(f"{f'  the same at {tiny} images':>32}: {small_s:7.2f} s, CPU {small_cpu:.2f} s")
    print(
        f"{'  dvc --version (start-up)':>32}: {statistics.median(t for t, _ in start_up):7.2f} s"
        f", CPU {start_cpu:.2f} s"
    )
    print(
        f"{'  ratio no-op big / small':>32}: {big_s / small_s:7.2f} (CPU {big_cpu / small_cpu:.2f})"
    )
    print(f"{'dvc status':>32}: {status:7.2f} s")
    print(f"{'dvc push after a new drop':>32}: {len(pushed)} objects {sorted(pushed.values())}")
    print(f"{'repro after a 1% drop':>32}: {incremental:7.2f} s")
    decoded, cached = prepare_more["decoded"], prepare_more["from_cache"]
    print(f"{'  decoded / from cache':>32}: {decoded} / {cached}")
    print(f"{'ratio 1% drop / first':>32}: {incremental / full:7.2f}")
    manifest = project / "data" / "raw" / "manifest.csv"
    print(f"{'manifest.csv':>32}: {manifest.stat().st_size / 2**20:.1f} MiB")


def build(work: Path, args: argparse.Namespace, env: dict[str, str], per_drop: int) -> Path:
    """A project with `args.drops` drops of `per_drop` generated JPEGs, each ingested."""
    project = setup_project(work, args.image_size)
    started = time.perf_counter()
    for drop in range(args.drops):
        name = f"drop-{drop + 1:03d}"
        seeds = range(drop * per_drop, (drop + 1) * per_drop)
        generate(project, name, seeds, args.source_size)
        ingest(project, env, name)
    print(
        f"{work.name}: generated and ingested {per_drop * args.drops} JPEGs "
        f"({args.source_size}px) in {args.drops} drops: {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    return project


def setup_project(work: Path, image_size: int) -> Path:
    import yaml

    project = work / "project"
    project.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, project / name)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(REPO_ROOT / "src", project / "src", ignore=ignore)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["prepare"]["image_size"] = image_size
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = pipeline_env()
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=project, env=env, check=True)
    shutil.copy(REPO_ROOT / ".dvc" / "config", project / ".dvc" / "config")  # default remote
    return project


def pipeline_env() -> dict[str, str]:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(REPO_ROOT / "src"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    for key in ("AUTHOR", "COMMITTER"):
        env[f"GIT_{key}_NAME"], env[f"GIT_{key}_EMAIL"] = "bench", "bench@example.com"
    return env


def generate(project: Path, name: str, seeds: range, size: int) -> None:
    images = ((f"class{seed % 10}", pattern_image(seed, size=size)) for seed in seeds)
    write_drop(project / "data" / "incoming" / name, images, fmt="JPEG")


def ingest(project: Path, env: dict[str, str], name: str) -> None:
    command = ["visionloop", "data", "ingest", "--quiet", "--allow-new-classes", name]
    subprocess.run(command, cwd=project, env=env, check=True, stdout=subprocess.DEVNULL)
    commit(project, env, f"ingest {name}")


def commit(project: Path, env: dict[str, str], message: str) -> None:
    subprocess.run(["git", "add", "-A"], cwd=project, env=env, check=True)
    subprocess.run(["git", "commit", "-qm", message], cwd=project, env=env, check=True)


def push(project: Path, env: dict[str, str]) -> dict[str, str]:
    """`dvc push`; the objects it added to the remote, each named by what it holds."""
    remote = project.parent / "visionloop-dvc-remote"  # .dvc/config: ../../visionloop-dvc-remote
    before = _objects(remote)
    subprocess.run(["dvc", "push", "-q"], cwd=project, env=env, check=True)
    names = {}
    for path in sorted(project.joinpath("data", "raw").rglob("*")):
        if path.is_file():
            names[_md5_name(path)] = path.name
    return {
        obj: names.get(obj, "listing" if obj.endswith(".dir") else "other")
        for obj in _objects(remote) - before
    }


def _objects(remote: Path) -> set[str]:
    root = remote / "files" / "md5"
    return (
        {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}
        if root.exists()
        else set()
    )


def _md5_name(path: Path) -> str:
    import hashlib

    digest = hashlib.md5(path.read_bytes()).hexdigest()
    return f"{digest[:2]}/{digest[2:]}"


def _all(values: list[float]) -> str:
    return "(" + ", ".join(f"{v:.2f}" for v in values) + ")"


def timed_output(project: Path, env: dict[str, str], *command: str) -> tuple[float, str]:
    elapsed, _, output = timed_cpu(project, env, *command)
    return elapsed, output


def timed_cpu(project: Path, env: dict[str, str], *command: str) -> tuple[float, float, str]:
    """(wall seconds, CPU seconds of the command and its children, output): CPU time is what
    the command would take on a machine with a core free for it."""
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    elapsed, after = time.perf_counter() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return elapsed, cpu, result.stdout + result.stderr


def last_summary(output: str) -> dict:
    """The JSON summary the prepare stage printed (the last JSON object in the output)."""
    blocks = re.findall(r"^\{\n.*?^\}$", output, flags=re.S | re.M)
    return json.loads(blocks[-1])


if __name__ == "__main__":
    main()
