"""Prepare's speed and memory on small JPEGs, read straight from the drops' shards.

    python bench/prepare.py [--sizes 10000 60000] [--source-size 32] [--image-size 32]

For each size, side by side in one run: a store of that many generated JPEGs (10 drops,
ingested with the real ingest, DVC off) and its split, then `visionloop stage prepare` in
a fresh process with an empty decode cache, with the default workers and with one (all in
one process). Prints decode images/s (the stage's own figure), the stage's seconds, and
the peak RSS of the stage's process and of its largest worker, and the ratios between
sizes: memory should stay flat as the number of images grows. Work in /tmp, deleted after.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from tests.rawdata import encode, pattern_image, write_drop  # noqa: E402

# Run in a fresh process: the stage, then its own peak RSS and its workers' (sampled from
# /proc: VmHWM, the peak of each worker's own memory; ru_maxrss of a child would also count
# the moment between fork and exec, when it is still a copy of the parent).
STAGE = """
import json, os, resource, sys, threading, time
from visionloop.config import load_config
from visionloop.data.prepare import run

peak = {"workers": 0}
def sample():
    while True:
        for pid in os.listdir("/proc"):
            try:
                status = open(f"/proc/{pid}/status").read()
            except OSError:
                continue
            fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
            if fields.get("PPid", "").strip() == str(os.getpid()) and "VmHWM" in fields:
                kib = int(fields["VmHWM"].split()[0])
                peak["workers"] = max(peak["workers"], kib)
        time.sleep(0.2)
threading.Thread(target=sample, daemon=True).start()
summary = run(load_config(sys.argv[1]))
summary["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
summary["worker_rss_mib"] = peak["workers"] / 1024
print(json.dumps(summary))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 60_000])
    parser.add_argument("--drops", type=int, default=10)
    parser.add_argument("--source-size", type=int, default=32, help="side of generated JPEGs")
    parser.add_argument("--image-size", type=int, default=32, help="prepare.image_size")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vl-bench-prepare-"))
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"), DVC_NO_ANALYTICS="1")
    try:
        print(decode_comparison(args.source_size), flush=True)
        results = {}
        for size in args.sizes:
            config = build_store(work / str(size), size, args, env)
            results[size] = {w: prepare(config, env, w) for w in (0, 1)}
            line = results[size][0]
            print(
                f"{size}: {line['decode_images_per_s']} images/s, rss {line['rss_mib']:.0f} MiB"
                f", worker {line['worker_rss_mib']:.0f} MiB",
                flush=True,
            )
            shutil.rmtree(work / str(size))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args)


def decode_comparison(size: int, count: int = 4000, rounds: int = 3) -> str:
    """The same small JPEGs decoded by 1 thread, 2 threads and 2 processes, interleaved,
    best of `rounds` (why prepare decodes in processes)."""
    import multiprocessing
    import time

    blobs = [encode(pattern_image(seed, size=size), "JPEG") for seed in range(count)]
    spawn = multiprocessing.get_context("spawn")  # as prepare starts its workers
    pools = {
        "1 thread": ThreadPoolExecutor(1),
        "2 threads": ThreadPoolExecutor(2),
        "2 processes": ProcessPoolExecutor(2, spawn),
    }
    rates = dict.fromkeys(pools, 0.0)
    for pool in pools.values():
        list(pool.map(_decode, blobs[:64], chunksize=16))  # start the workers first
    for _ in range(rounds):
        for name, pool in pools.items():
            started = time.perf_counter()
            list(pool.map(_decode, blobs, chunksize=256))
            rates[name] = max(rates[name], count / (time.perf_counter() - started))
    for pool in pools.values():
        pool.shutdown()
    shown = ", ".join(f"{name} {rate:.0f}/s" for name, rate in rates.items())
    return f"decode + resize of {count} {size}-px JPEGs (best of {rounds}): {shown}"


def _decode(blob: bytes):
    from visionloop.images import load_for_model

    return load_for_model(blob, 32, "crop")  # what prepare does to each image


def build_store(root: Path, count: int, args: argparse.Namespace, env: dict) -> Path:
    root.mkdir(parents=True)
    params = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    params["data"]["dvc"]["track"] = False
    params["prepare"]["image_size"] = args.image_size
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    per_drop = count // args.drops
    for drop in range(args.drops):
        seeds = range(drop * per_drop, (drop + 1) * per_drop)
        images = ((f"class{s % 10}", pattern_image(s, size=args.source_size)) for s in seeds)
        write_drop(root / "data" / "incoming" / f"drop-{drop:02d}", images, fmt="JPEG")
    cli = [sys.executable, "-m", "visionloop", "--params", str(root / "params.yaml")]
    subprocess.run(
        [*cli, "data", "ingest", "-q", "--allow-new-classes"],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
    )
    subprocess.run([*cli, "stage", "split"], env=env, check=True, stdout=subprocess.DEVNULL)
    return root / "params.yaml"


def prepare(params: Path, env: dict, workers: int) -> dict:
    config = yaml.safe_load(params.read_text())
    config["prepare"]["workers"] = workers
    params.write_text(yaml.safe_dump(config, sort_keys=False))
    shutil.rmtree(params.parent / "data" / "cache", ignore_errors=True)  # decode everything
    done = subprocess.run(
        [sys.executable, "-c", STAGE, str(params)],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(results: dict, args: argparse.Namespace) -> None:
    print()
    print(
        f"{args.source_size}-px JPEGs prepared at {args.image_size} px; "
        f"load {os.getloadavg()[0]:.1f}, {os.cpu_count()} cores"
    )
    print("| images | workers | decode images/s | stage seconds | peak RSS | largest worker |")
    print("|---|---|---|---|---|---|")
    for size, by_workers in results.items():
        for workers, r in by_workers.items():
            shown = workers or f"default ({min(8, os.cpu_count() or 1)})"
            print(
                f"| {size} | {shown} | {r['decode_images_per_s']:.0f} | {r['seconds']:.1f} | "
                f"{r['rss_mib']:.0f} MiB | {r['worker_rss_mib']:.0f} MiB |"
            )
    sizes = sorted(results)
    if len(sizes) > 1:
        small, large = results[sizes[0]][0], results[sizes[-1]][0]
        print(
            f"peak RSS {sizes[-1]} / {sizes[0]}: {large['rss_mib'] / small['rss_mib']:.2f} "
            f"(workers {large['worker_rss_mib'] / small['worker_rss_mib']:.2f}); "
            f"images {sizes[-1] / sizes[0]:.0f}x"
        )
    for size in sizes:
        one, default = results[size][1], results[size][0]
        speedup = default["decode_images_per_s"] / one["decode_images_per_s"]
        print(f"{size}: default workers / one process: {speedup:.2f}x decode speed")


if __name__ == "__main__":
    main()
