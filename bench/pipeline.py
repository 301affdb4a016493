"""Benchmark the data half of `dvc repro`: split + prepare on N generated images.

    python bench/pipeline.py --images 10000
    python bench/pipeline.py --images 60000 --keep /tmp/bench60k

Builds a temporary git + DVC repository with the project's dvc.yaml, params.yaml and code,
writes N generated JPEGs as one drop and ingests it (`visionloop data ingest`), then times,
side by side: the first `dvc repro`, a no-op `dvc repro` (target <= 3 s at
60,000), and a `dvc repro` after a drop of 1% more images. Prepare's decode throughput
(images/s) comes from the stage's own summary.
"""

from __future__ import annotations

import argparse
import json
import os
import re
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
    parser.add_argument("--source-size", type=int, default=96, help="side of generated JPEGs")
    parser.add_argument("--image-size", type=int, default=64, help="prepare.image_size")
    parser.add_argument("--keep", help="work in this folder and keep it")
    return parser.parse_args()


def run(args: argparse.Namespace, work: Path) -> None:
    project = setup_project(work, args.image_size)
    env = pipeline_env()
    count = args.images
    later = max(1, count // 100)

    seconds = timed(lambda: generate(project, "drop-1", range(count), args.source_size))
    print(f"generated {count} JPEGs ({args.source_size}px) in {seconds:.1f} s", flush=True)
    seconds = timed(lambda: ingest(project, env, "drop-1"))
    print(f"ingest + dvc add + commit: {seconds:.1f} s (ingest's cost, for context)", flush=True)

    full, out = timed_output(project, env, "dvc", "repro")
    prepare = last_summary(out)
    commit(project, env, "repro")
    noop = [timed_output(project, env, "dvc", "repro")[0] for _ in range(3)]
    status = timed_output(project, env, "dvc", "status")[0]

    generate(project, "drop-2", range(count, count + later), args.source_size)
    ingest(project, env, "drop-2")
    incremental, out = timed_output(project, env, "dvc", "repro")
    prepare_more = last_summary(out)

    noop_median = statistics.median(noop)
    print()
    print(f"{'images':>28}: {count} (+{later} in the second drop); load: {os.getloadavg()[0]:.1f}")
    print(f"{'first dvc repro':>28}: {full:7.2f} s")
    print(f"{'  prepare decode':>28}: {prepare['decode_images_per_s']} images/s")
    print(f"{'no-op dvc repro (median/3)':>28}: {noop_median:7.2f} s  (target <= 3 s at 60k)")
    print(f"{'dvc status':>28}: {status:7.2f} s")
    print(f"{'repro after a 1% drop':>28}: {incremental:7.2f} s")
    decoded, cached = prepare_more["decoded"], prepare_more["from_cache"]
    print(f"{'  decoded / from cache':>28}: {decoded} / {cached}")
    print(f"{'ratio 1% drop / first':>28}: {incremental / full:7.2f}")
    print(f"{'ratio no-op / first':>28}: {noop_median / full:7.3f}")


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


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def timed_output(project: Path, env: dict[str, str], *command: str) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    elapsed = time.perf_counter() - started
    if result.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{result.stdout}\n{result.stderr}")
    return elapsed, result.stdout + result.stderr


def last_summary(output: str) -> dict:
    """The JSON summary the prepare stage printed (the last JSON object in the output)."""
    blocks = re.findall(r"^\{\n.*?^\}$", output, flags=re.S | re.M)
    return json.loads(blocks[-1])


if __name__ == "__main__":
    main()
