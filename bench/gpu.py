"""The GPU path, measured: our input pipeline against the seed's naive loop, side by side.

    python bench/gpu.py                        # on a machine with CUDA (about 2 minutes)
    python bench/gpu.py --json                 # the same figures as JSON
    python bench/gpu.py --device cpu --quick   # checks on a CPU that the script runs

For each input size (64 and 224 px) and model (resnet18, resnet50) it trains a few dozen
steps two ways on the same synthetic photos:

- ours: the train stage's path: the prepared cache (visionloop.artifacts.prepared, written
  and memory-mapped as prepare does) moved to the GPU once by visionloop.training.data's
  TrainImages, batches gathered there, augmentation on the GPU (visionloop.training.augment:
  random resized crop + flip + normalisation), AMP bf16, channels_last, AdamW;
- naive: the seed's loop, torchvision ImageFolder over JPEG files + ToTensor + a DataLoader
  with worker processes, fp32, decoding every image every step.

It prints images/s and the fraction of the time the GPU was busy (CUDA events around each
step's work: their summed durations over the wall time between the first and the last;
1.0 means the GPU never waited for input), and the speed-up ours/naive. With two or more
GPUs it also runs ours under `torchrun --nproc-per-node 2` (DDP, NCCL) and reports images/s
over both. Targets on a GPU: busy >= 0.90 (never input-bound) and >= 5x the naive loop at
224 px. With no CUDA device and no --device cpu it says so and exits 0.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT / "src"))

CLASSES = 10


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default=None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and steps (a check)")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--models", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=None, help="measured steps per run")
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--workers", type=int, default=None, help="naive loop's DataLoader")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = args.sizes or ([32] if quick else [64, 224])
    args.models = args.models or (["resnet18"] if quick else ["resnet18", "resnet50"])
    args.steps = args.steps or (3 if quick else 40)
    args.batch = args.batch or (8 if quick else 256)
    args.workers = args.workers if args.workers is not None else (1 if quick else 8)
    return args


def main(argv: list[str] | None = None) -> None:
    import torch

    args = parse_args(argv)
    if args.ddp_worker:
        ddp_worker(args)
        return
    device = args.device or ("cuda" if torch.cuda.is_available() else None)
    if device is None:
        print("no CUDA device: nothing to measure (`--device cpu --quick` checks the script)")
        return
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda, but torch sees no CUDA device")
    results = run_all(args, device)
    print(json.dumps(results, indent=2) if args.json else report(results))


def run_all(args: argparse.Namespace, device: str) -> dict:
    import torch

    results: dict = {"device": describe(device), "batch": args.batch, "runs": []}
    torch.backends.cudnn.benchmark = True  # both loops: fixed shapes, fastest kernels
    work = Path(tempfile.mkdtemp(prefix="vl-bench-gpu-"))
    try:
        for size in args.sizes:
            images, labels = synthetic_photos(images_needed(args), size)
            folder = write_jpegs(work / f"jpeg-{size}", images, labels)
            cache = prepared_cache(work / f"prepared-{size}", images, labels)
            for arch in args.models:
                ours = train_from_cache(arch, cache, args, device)
                naive = train_naive(arch, folder, args, device)
                run = {"size": size, "model": arch, "ours": ours, "naive": naive}
                run["speedup"] = ours["images_per_s"] / naive["images_per_s"]
                if device == "cuda" and torch.cuda.device_count() >= 2:
                    run["ours_2_gpus"] = torchrun_two(arch, size, args)
                results["runs"].append(run)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def images_needed(args: argparse.Namespace) -> int:
    """Enough for every measured and warm-up step without reusing a batch within one."""
    return args.batch * min(args.steps + WARMUP, 16)


WARMUP = 5  # steps before measuring: cuDNN autotuning, allocator, worker start-up


def describe(device: str) -> str:
    import torch

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} x{torch.cuda.device_count()}"
    return f"cpu ({torch.get_num_threads()} threads)"


def synthetic_photos(count: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth random colour fields with a class-dependent tint: photo-like uint8 images."""
    rng = np.random.default_rng(0)
    labels = np.arange(count) % CLASSES
    coarse = rng.integers(0, 256, (count, 8, 8, 3), dtype=np.uint8)
    import torch
    import torch.nn.functional as F

    smooth = F.interpolate(
        torch.from_numpy(coarse).permute(0, 3, 1, 2).float(), size=(size, size), mode="bilinear"
    )
    tint = torch.from_numpy(labels * 20.0).view(-1, 1, 1, 1)
    images = (smooth + tint).clamp(0, 255).byte().permute(0, 2, 3, 1).contiguous().numpy()
    return images, labels


def prepared_cache(folder: Path, images: np.ndarray, labels: np.ndarray):
    """The images as the prepare stage leaves them: a memory-mapped uint8 train split."""
    from visionloop.artifacts.prepared import open_prepared_split, write_prepared_split

    shas = [f"{index:064x}" for index in range(len(labels))]
    write_prepared_split(folder, "train", images, labels, shas)
    return open_prepared_split(folder, "train")


def write_jpegs(folder: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    """The naive loop's input: one JPEG per image in class folders (what ImageFolder reads)."""
    from PIL import Image

    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / f"c{label}" / f"{index:05d}.jpg", quality=90)
    return folder


class StepClock:
    """Wall time and device-busy time of a sequence of steps.

    On CUDA each step's work is bracketed by events on the stream; the GPU is busy between a
    step's start and end event and idle (waiting for input) between one step's end and the
    next one's start. On a CPU the work is synchronous: busy is the share of wall time spent
    in the model's step rather than in fetching and preparing the batch."""

    def __init__(self, device: str) -> None:
        import torch

        self.cuda = device == "cuda"
        self.events: list[tuple] = []
        self.busy_s = 0.0
        self.torch = torch

    def start(self) -> None:
        if self.cuda:
            begin = self.torch.cuda.Event(enable_timing=True)
            begin.record()
            self.events.append((begin,))
        self.began = time.perf_counter()

    def stop(self) -> None:
        if self.cuda:
            end = self.torch.cuda.Event(enable_timing=True)
            end.record()
            self.events[-1] = (self.events[-1][0], end)
        else:
            self.busy_s += time.perf_counter() - self.began

    def busy_fraction(self, wall_s: float) -> float:
        if not self.cuda:
            return self.busy_s / wall_s
        self.torch.cuda.synchronize()
        busy = sum(begin.elapsed_time(end) for begin, end in self.events) / 1000
        span = self.events[0][0].elapsed_time(self.events[-1][1]) / 1000
        return busy / span


def model_and_optimizer(
    arch: str, size: int, device: str, channels_last: bool, ddp_device: int | None = None
):
    """The model (wrapped in DDP when ddp_device is given) and AdamW over its parameters."""
    import torch

    from visionloop.models.zoo import build_model

    torch.manual_seed(0)
    model = build_model(arch, num_classes=CLASSES, image_size=size).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if ddp_device is not None:
        model = torch.nn.parallel.DistributedDataParallel(model, device_ids=[ddp_device])
    return model, torch.optim.AdamW(model.parameters(), lr=1e-3)


def train_from_cache(
    arch: str, cache, args: argparse.Namespace, device: str, ddp_device: int | None = None
) -> dict:
    """Our path: the uint8 cache on the device once, GPU augmentation, bf16, channels_last."""
    import torch
    import torch.nn.functional as F

    from visionloop.config import AugmentConfig
    from visionloop.training.augment import Augment
    from visionloop.training.data import TrainImages

    size = cache.images.shape[1]
    model, optimizer = model_and_optimizer(arch, size, device, True, ddp_device)
    augment_config = AugmentConfig(
        crop_scale=(0.35, 1.0), crop_ratio=(0.75, 1.333), hflip=True, policy="none"
    )
    augment = Augment(augment_config, (0.5,) * 3, (0.25,) * 3, CLASSES, torch.device(device), True)
    source = TrainImages(cache, torch.device(device))  # on CUDA: moved to the GPU once, here
    order = np.random.default_rng(0).integers(0, len(cache), args.batch * (WARMUP + args.steps))
    amp = device == "cuda"
    clock = StepClock(device)
    for step, (images, labels) in enumerate(source.batches(order, args.batch)):
        if step == WARMUP:
            synchronize(device)
            started = time.perf_counter()
            clock = StepClock(device)
        clock.start()
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        x, y = augment.train_batch(images, labels)
        with torch.autocast(device, dtype=torch.bfloat16, enabled=amp):
            loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        clock.stop()
    synchronize(device)
    wall = time.perf_counter() - started
    return {
        "images_per_s": args.steps * args.batch / wall,
        "busy": clock.busy_fraction(wall),
        "amp": "bf16" if amp else "off",
        "cache_on_device": source.on_device,
    }


def train_naive(arch: str, folder: Path, args: argparse.Namespace, device: str) -> dict:
    """The seed's loop: ImageFolder + ToTensor + DataLoader workers, fp32, every JPEG decoded
    every step."""
    import torch
    import torch.nn.functional as F
    from torchvision import datasets, transforms

    dataset = datasets.ImageFolder(str(folder), transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=args.batch,
        shuffle=True,
        num_workers=args.workers,
        pin_memory=device == "cuda",
        drop_last=True,
        persistent_workers=args.workers > 0,
    )
    size = dataset[0][0].shape[-1]
    model, optimizer = model_and_optimizer(arch, size, device, channels_last=False)
    clock = StepClock(device)
    done = 0
    while done < WARMUP + args.steps:
        for x, y in loader:
            if done == WARMUP:
                synchronize(device)
                started = time.perf_counter()
                clock = StepClock(device)
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            clock.start()
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            clock.stop()
            done += 1
            if done == WARMUP + args.steps:
                break
    synchronize(device)
    wall = time.perf_counter() - started
    return {
        "images_per_s": args.steps * args.batch / wall,
        "busy": clock.busy_fraction(wall),
        "workers": args.workers,
    }


def synchronize(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def torchrun_two(arch: str, size: int, args: argparse.Namespace) -> dict:
    """Ours under DDP on two GPUs (NCCL): images/s over both, from rank 0's report."""
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    command = [
        torchrun,
        "--standalone",
        "--nproc-per-node=2",
        str(Path(__file__).resolve()),
        "--ddp-worker",
        *("--sizes", str(size), "--models", arch),
        *("--steps", str(args.steps), "--batch", str(args.batch)),
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        return {"error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def ddp_worker(args: argparse.Namespace) -> None:
    """One rank of torchrun_two: its own shard of the cache, gradients all-reduced by DDP."""
    import torch
    import torch.distributed as dist

    rank, local = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    torch.cuda.set_device(local)
    dist.init_process_group("nccl")
    images, labels = synthetic_photos(images_needed(args), args.sizes[0])
    share = slice(rank, None, dist.get_world_size())
    folder = Path(tempfile.mkdtemp(prefix=f"vl-bench-gpu-rank{rank}-"))
    try:
        cache = prepared_cache(folder, images[share], labels[share])
        result = train_from_cache(args.models[0], cache, args, "cuda", local)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    totals = torch.tensor([result["images_per_s"]], device="cuda")
    dist.all_reduce(totals)
    if rank == 0:
        print(json.dumps({"images_per_s": float(totals[0]), "busy_rank0": result["busy"]}))
    dist.destroy_process_group()


def report(results: dict) -> str:
    lines = [f"{results['device']}, batch {results['batch']}"]
    lines.append(f"{'size':>4} {'model':10} {'ours img/s':>11} {'busy':>5} "
                 f"{'naive img/s':>12} {'busy':>5} {'ours/naive':>10}")  # fmt: skip
    for run in results["runs"]:
        ours, naive = run["ours"], run["naive"]
        lines.append(
            f"{run['size']:>4} {run['model']:10} {ours['images_per_s']:>11.0f} "
            f"{ours['busy']:>5.2f} {naive['images_per_s']:>12.0f} {naive['busy']:>5.2f} "
            f"{run['speedup']:>9.1f}x"
        )
        if "ours_2_gpus" in run:
            lines.append(f"     2 GPUs (torchrun, DDP): {run['ours_2_gpus']}")
    lines.append("targets on a GPU: busy >= 0.90 for ours; ours/naive >= 5x at 224 px")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
