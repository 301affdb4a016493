"""Serving speed, side by side in one run, on models trained here by the train stage:

1. runtimes: eager torch vs ONNX fp32 vs int8 (the files registration builds), images/s at
   batch 1 and batch 64 through each runtime's `predict_proba` (uint8 images in: the
   normalisation and softmax are counted for all), and top-1 on the test split. Rounds are
   interleaved (torch, onnx, int8, torch, ...) so that load from other processes falls on
   all of them alike; img/s are medians over rounds.
2. REST: `visionloop serve` (a real uvicorn subprocess on 127.0.0.1, following @champion,
   prediction log on) against in-process prediction of the same PNG bytes with the same
   loaded model (decode + predict). Latency p50/p99 of one client sending one image at a
   time (in rounds, interleaved with in-process prediction), then a bounded load (CLIENTS
   threads x REQUESTS requests, keep-alive) with its throughput; halfway through the load
   @champion moves to another version, and every request must still succeed.

Run from the repo root: `python -m bench.serve [--archs simple_cnn,resnet18] [--requests 500]`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from tests.digits import write_digits_cache
from tests.helpers import REPO_PARAMS
from visionloop.config import Config, deep_merge, load_config

BATCHES = (1, 64)
ROUNDS = 5
ROUND_SECONDS = 1.0
REST_ROUNDS = 10
MODEL = "visionloop-classifier"


def project_config(root: Path, arch: str, epochs: int) -> dict:
    return {
        "data": {"raw_dir": str(root / "raw")},
        "prepare": {"dir": str(root / "prepared")},
        "train": {
            "dir": str(root / arch / "candidate"),
            "checkpoint_dir": str(root / arch / "checkpoints"),
            "model": arch,
            "epochs": epochs,
            "progress": "off",
        },
        "registry": {
            "tracking_uri": f"sqlite:///{root}/mlflow.db",
            "artifact_dir": str(root / "artifacts"),
            "dir": str(root / "registry"),
        },
        "serving": {
            "prediction_log": str(root / "serving" / "predictions"),
            "poll_seconds": 1.0,
        },
    }


def train_bundle(config: Config, keep: Path) -> Path:
    """Train with the train stage; the bundle copied to `keep` (train.dir is reused)."""
    from visionloop.training.engine import train

    train(config)
    shutil.copytree(config.train.dir / "model", keep)
    return keep


# ---- 1. runtimes ---------------------------------------------------------------------------


def runtimes(config: Config, bundle_dir: Path, out_dir: Path, threads: int):
    from visionloop.models.classifier import load_bundle
    from visionloop.serving.export import build_exports
    from visionloop.serving.runtimes import OnnxRuntime, TorchRuntime

    started = time.perf_counter()
    report = build_exports(config, bundle_dir, out_dir)
    export_seconds = time.perf_counter() - started
    classifier = load_bundle(bundle_dir)
    meta = classifier.meta
    built = {"torch": TorchRuntime(classifier)}
    if report.status == "ok":
        built["onnx"] = OnnxRuntime("onnx", out_dir / "model.onnx", meta, threads)
        if (out_dir / "model.int8.onnx").exists():
            built["int8"] = OnnxRuntime("int8", out_dir / "model.int8.onnx", meta, threads)
    return report, built, export_seconds


def images_per_second(runtime, images: np.ndarray, batch: int) -> float:
    chunk = images[:batch]
    runtime.predict_proba(chunk, batch)  # warm
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < ROUND_SECONDS:
        runtime.predict_proba(chunk, batch)
        done += batch
    return done / (time.perf_counter() - started)


def compare_runtimes(built: dict, images: np.ndarray) -> dict[tuple[str, int], float]:
    speeds: dict[tuple[str, int], list[float]] = {}
    for _ in range(ROUNDS):
        for batch in BATCHES:
            for name, runtime in built.items():
                speeds.setdefault((name, batch), []).append(
                    images_per_second(runtime, images, batch)
                )
    return {key: statistics.median(values) for key, values in speeds.items()}


def print_runtimes(arch: str, size: int, report, speeds, export_seconds: float) -> None:
    print(f"\n{arch} at {size} px, {torch.get_num_threads()} torch threads; medians of {ROUNDS}")
    print(f"  exports built and checked in {export_seconds:.1f} s (registration pays this)")
    top1 = {"torch": report.torch_top1, "onnx": report.fp32_top1, "int8": report.int8_top1}
    names = [name for name in ("torch", "onnx", "int8") if (name, 1) in speeds]
    print("  runtime   batch 1 img/s   batch 64 img/s   test top-1")
    for name in names:
        accuracy = f"{top1[name]:.4f}" if top1[name] is not None else "-"
        print(
            f"  {name:<7} {speeds[(name, 1)]:>12.0f}   {speeds[(name, 64)]:>14.0f}   {accuracy:>10}"
        )
    for name in names[1:]:
        ratios = "  ".join(
            f"batch {b}: {speeds[(name, b)] / speeds[('torch', b)]:.2f}x" for b in BATCHES
        )
        print(f"  {name} / torch   {ratios}   (target >= 2x for onnx or int8)")
    print(
        f"  onnx vs torch: max prob diff {report.max_prob_diff:.2g}, argmax agreement "
        f"{report.argmax_agreement:.4f}; int8 top-1 drop {report.int8_drop:+.4f} "
        f"({report.int8}; target <= 0.005)"
    )


# ---- 2. REST -------------------------------------------------------------------------------


def register_two_versions(config: Config, bundle_dir: Path) -> None:
    """v1 = the trained bundle, v2 = the same network with scaled logits (same answers,
    another bundle): @champion on v1, so the load can move it to v2."""
    from visionloop.artifacts.bundle import read_meta, save_bundle
    from visionloop.models.classifier import load_bundle
    from visionloop.promotion.registry import register_candidate, registry_client

    for name in ("v1", "v2"):
        module = load_bundle(bundle_dir).module
        if name == "v2":
            head = [m for m in module.modules() if isinstance(m, torch.nn.Linear)][-1]
            with torch.no_grad():
                head.weight.mul_(1.5)
                head.bias.mul_(1.5)
        target = config.train.dir / "model"
        shutil.rmtree(target, ignore_errors=True)
        save_bundle(target, module, read_meta(bundle_dir))
        register_candidate(config)
    registry_client(config).set_registered_model_alias(MODEL, "champion", "1")


def start_server(params: Path, cwd: Path) -> tuple[subprocess.Popen, str, list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "visionloop", "--params", str(params), "serve", "--port", "0"],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []

    def read() -> None:
        for line in process.stdout:
            lines.append(line.rstrip())

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        for line in lines:
            if line.startswith("serving ") and " on http://" in line:
                return process, line.split(" on ")[1].split(",")[0], lines
        if process.poll() is not None:
            break
        time.sleep(0.1)
    raise SystemExit("the server did not start:\n" + "\n".join(lines))


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def in_process_latencies(model, data: bytes, rules, count: int) -> list[float]:
    from visionloop.serving.inputs import to_model_image

    meta = model.meta
    latencies = []
    for _ in range(count):
        started = time.perf_counter()
        pixels = to_model_image(data, meta.image_size, meta.resize, rules).pixels
        model.runtime.predict_proba(pixels[None], 1)
        latencies.append(time.perf_counter() - started)
    return latencies


def rest_latencies(url: str, data: bytes, count: int) -> list[float]:
    import httpx

    latencies = []
    with httpx.Client(timeout=60) as client:
        for _ in range(count):
            started = time.perf_counter()
            response = client.post(
                f"{url}/v1/predict", content=data, headers={"Content-Type": "image/png"}
            )
            latencies.append(time.perf_counter() - started)
            response.raise_for_status()
    return latencies


def load(url: str, data: bytes, clients: int, requests: int, halfway) -> dict:
    import httpx

    results: list[list[tuple[float, int, str]]] = [[] for _ in range(clients)]
    total = clients * requests
    fired = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(timeout=60) as session:
            for _ in range(requests):
                started = time.perf_counter()
                try:
                    response = session.post(
                        f"{url}/v1/predict", content=data, headers={"Content-Type": "image/png"}
                    )
                    version = response.json()["model"]["version"] if response.is_success else ""
                    status = response.status_code
                except httpx.HTTPError:
                    status, version = 0, ""
                results[index].append((time.perf_counter() - started, status, version))
                if not fired.is_set() and sum(len(r) for r in results) >= total // 2:
                    fired.set()
                    threading.Thread(target=halfway, daemon=True).start()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    flat = [entry for entries in results for entry in entries]
    return {
        "latencies": [lat for lat, _, _ in flat],
        "failed": sum(1 for _, status, _ in flat if status != 200),
        "versions": sorted({version for _, _, version in flat if version}),
        "throughput": len(flat) / wall,
        "count": len(flat),
    }


def rest_bench(settings: dict, root: Path, bundle_dir: Path, clients: int, requests: int) -> None:
    from visionloop.artifacts.prepared import open_prepared_split
    from visionloop.promotion.pyfunc import png_bytes
    from visionloop.promotion.registry import registry_client
    from visionloop.serving.inputs import image_rules
    from visionloop.serving.source import load_model, resolve

    config = load_config(REPO_PARAMS, overrides=settings)
    register_two_versions(config, bundle_dir)
    params = root / "params.yaml"
    params.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(REPO_PARAMS.read_text()), settings)))
    data = png_bytes(np.array(open_prepared_split(config.prepare.dir, "test").images[0]))
    model = load_model(config, resolve(config, f"models:/{MODEL}@champion"))
    process, url, lines = start_server(params, root)
    try:
        # Interleaved in rounds, so that load from other processes falls on both alike.
        inproc, single = [], []
        for _ in range(REST_ROUNDS):
            inproc += in_process_latencies(
                model, data, image_rules(config), requests // REST_ROUNDS
            )
            single += rest_latencies(url, data, requests // REST_ROUNDS)

        def promote() -> None:
            registry_client(config).set_registered_model_alias(MODEL, "champion", "2")

        loaded = load(url, data, clients, requests, promote)
    finally:
        process.terminate()
        process.wait(timeout=60)
    ms = 1000.0
    print(f"\nREST vs in-process, {model.ref.label} ({model.runtime.name}), one {len(data)} B PNG")
    print(
        f"  in process (decode + predict), {requests} x : p50 {percentile(inproc, 50) * ms:.2f} "
        f"ms  p99 {percentile(inproc, 99) * ms:.2f} ms  ({1 / statistics.mean(inproc):.0f} img/s)"
    )
    print(
        f"  REST, 1 client x {requests}            : p50 {percentile(single, 50) * ms:.2f} ms  "
        f"p99 {percentile(single, 99) * ms:.2f} ms  ({1 / statistics.mean(single):.0f} req/s)"
    )
    lat = loaded["latencies"]
    print(
        f"  REST, {clients} clients x {requests}           : p50 {percentile(lat, 50) * ms:.2f} "
        f"ms  p99 {percentile(lat, 99) * ms:.2f} ms  {loaded['throughput']:.0f} req/s"
    )
    print(
        f"  REST p99 (1 client) / in-process p99 = "
        f"{percentile(single, 99) / percentile(inproc, 99):.2f}  (target <= 3)"
    )
    print(
        f"  REST throughput ({clients} clients) / in-process = "
        f"{loaded['throughput'] * statistics.mean(inproc):.2f}"
    )
    print(
        f"  failed requests under load: {loaded['failed']} of {loaded['count']}; "
        f"@champion moved v1 -> v2 halfway, answers came from versions {loaded['versions']}"
    )
    swapped = [line for line in lines if "swapped" in line]
    print(f"  server log: {swapped[-1] if swapped else 'no swap logged'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archs", default="simple_cnn,resnet18")
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--requests", type=int, default=500, help="per client")
    parser.add_argument(
        "--threads", type=int, default=0, help="torch and onnxruntime threads [default: theirs]"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from visionloop.artifacts.prepared import open_prepared_split
    from visionloop.env import apply_offline_defaults

    apply_offline_defaults()
    print("Measured on a shared machine: other processes may run beside this benchmark;")
    print("the figures that matter are the ratios, measured side by side in this run.")
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        root = Path(tmp)
        write_digits_cache(root, size=args.size)
        test = open_prepared_split(root / "prepared", "test")
        images = np.array(test.images)
        first_bundle, first_settings = None, None
        for arch in args.archs.split(","):
            settings = project_config(root, arch, args.epochs)
            config = load_config(REPO_PARAMS, overrides=settings)
            bundle_dir = train_bundle(config, root / arch / "bundle")
            out_dir = root / arch / "exports"
            out_dir.mkdir(parents=True)
            report, built, seconds = runtimes(config, bundle_dir, out_dir, args.threads)
            print_runtimes(arch, args.size, report, compare_runtimes(built, images), seconds)
            if first_bundle is None:
                first_bundle, first_settings = bundle_dir, settings
        rest_bench(first_settings, root, first_bundle, args.clients, args.requests)


if __name__ == "__main__":
    main()
