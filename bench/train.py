"""Training speed, side by side in one run on the same model (simple_cnn) and data (digits):

1. naive: the seed's loop, torchvision ImageFolder over PNG files + ToTensor + Adam,
   decoding every image every epoch;
2. stage: one epoch of visionloop's train stage (`engine.Session.run_epoch`, default params:
   batches from the prepared cache, augmentation, AdamW, schedule, validation);
3. compute: forward + backward + optimiser step on tensors already in memory, with the
   stage's model and optimiser (the same fused kernels) and nothing else.

The three run interleaved, one epoch each in turn, so that load from other processes falls
on all of them alike; img/s are medians over epochs (training time only, evaluation
excluded for every contestant). Naive and stage are evaluated after every epoch on the same
held-out digits (the bench puts them in the stage's `val` split: fine for a speed bench,
never for a real run). Run from the repo root: `python -m bench.train [--threads 1]`.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from tests.digits import digits_rgb, stratified_split, write_digits_cache
from tests.helpers import REPO_PARAMS
from visionloop.artifacts.prepared import open_prepared_split, write_prepared_split
from visionloop.config import TrainConfig, load_config
from visionloop.models.zoo import build_model
from visionloop.progress import Progress
from visionloop.training.engine import Session
from visionloop.training.optim import build_optimizer
from visionloop.training.runtime import Runtime

BATCH = 64  # the seed loop's


class NaiveLoop:
    """The seed's loop: decode every PNG every epoch."""

    def __init__(self, folder: Path, test: tuple[np.ndarray, np.ndarray], size: int) -> None:
        from torchvision import datasets, transforms

        torch.manual_seed(0)
        self.dataset = datasets.ImageFolder(str(folder), transform=transforms.ToTensor())
        self.loader = torch.utils.data.DataLoader(self.dataset, batch_size=BATCH, shuffle=True)
        self.model = build_model("simple_cnn", num_classes=10, image_size=size)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=1e-3)
        self.test_x = torch.from_numpy(test[0]).permute(0, 3, 1, 2).float() / 255
        self.test_y = test[1]

    def epoch(self) -> tuple[float, float]:
        """(train seconds, test accuracy)"""
        self.model.train()
        started = time.perf_counter()
        for images, labels in self.loader:
            self.optimizer.zero_grad()
            torch.nn.functional.cross_entropy(self.model(images), labels).backward()
            self.optimizer.step()
        elapsed = time.perf_counter() - started
        self.model.eval()
        with torch.inference_mode():
            predicted = self.model(self.test_x).argmax(1).numpy()
        return elapsed, float((predicted == self.test_y).mean())


class ComputeLimit:
    """Forward + backward + optimiser step on normalised tensors already in memory, with the
    stage's own model and optimiser (the same kernels), and nothing else."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, size: int, cfg: TrainConfig):
        torch.manual_seed(0)
        memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
        self.model = build_model(cfg.model, 10, size).to(memory_format=memory_format)
        self.optimizer = build_optimizer(self.model, cfg)
        x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.3) / 0.4
        x = x.contiguous(memory_format=memory_format)
        batch = cfg.batch_size  # the stage's (the recipe's), which the naive loop does not share
        self.batches = list(zip(x.split(batch), torch.from_numpy(labels).split(batch), strict=True))
        self.count = len(labels)

    def epoch(self) -> float:
        started = time.perf_counter()
        for inputs, targets in self.batches:
            self.optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(self.model(inputs), targets).backward()
            self.optimizer.step()
        return time.perf_counter() - started


def stage_session(root: Path, prepared: Path, raw: Path) -> Session:
    config = load_config(
        REPO_PARAMS,
        overrides={
            "data": {"raw_dir": str(raw)},
            "prepare": {"dir": str(prepared)},
            "train": {"dir": str(root / "candidate"), "checkpoint_dir": str(root / "ck")},
        },
    )
    return Session(config, Runtime(torch.device("cpu")))


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{index:04d}.png")
    return root


def svc_test_accuracy(images, labels, parts) -> float:
    """scikit-learn's SVC (defaults) on the raw grey pixels of the same split."""
    from sklearn.svm import SVC

    pixels = images[..., 0].reshape(len(images), -1) / 255.0
    model = SVC().fit(pixels[parts["train"]], labels[parts["train"]])
    return float((model.predict(pixels[parts["test"]]) == labels[parts["test"]]).mean())


def time_to(rows: list[tuple[float, float]], target: float) -> float | None:
    """Cumulative training seconds when the accuracy first reaches target."""
    spent = 0.0
    for seconds, accuracy in rows:
        spent += seconds
        if accuracy >= target:
            return spent
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=12)
    # On a loaded 2-core machine, 2 OpenMP threads wait on each other at every small op;
    # 1 thread gives stable ratios there.
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads [default: torch's]"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    images, labels = digits_rgb(args.size)
    parts = stratified_split(labels, (0.70, 0.15, 0.15), seed=0)
    train_x, train_y = images[parts["train"]], labels[parts["train"]]
    test_x, test_y = images[parts["test"]], labels[parts["test"]]
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        paths = write_digits_cache(root, size=args.size)
        test = open_prepared_split(paths["prepared_dir"], "test")
        assert np.array_equal(test.images, test_x)  # the same split on both sides
        write_prepared_split(paths["prepared_dir"], "val", test_x, test_y, list(test.sha256))
        naive = NaiveLoop(
            write_image_folder(root / "png", train_x, train_y), (test_x, test_y), args.size
        )
        stage = stage_session(root / "stage", paths["prepared_dir"], paths["raw_dir"])
        compute = ComputeLimit(train_x, train_y, args.size, stage.cfg)
        naive_rows, stage_rows, compute_speeds = [], [], []
        with Progress("off") as quiet:
            for _ in range(args.epochs):
                naive_rows.append(naive.epoch())
                if not stage.finished:
                    metrics = stage.run_epoch(quiet)
                    stage_rows.append((metrics["epoch_time_s"], metrics["val_accuracy"]))
                compute_speeds.append(compute.count / compute.epoch())
    count = len(train_y)
    report(
        naive_rows,
        stage_rows,
        count,
        float(np.median(compute_speeds)),
        svc_test_accuracy(images, labels, parts),
    )


def report(naive_rows, stage_rows, count, limit, svc) -> None:
    naive_speed = float(np.median([count / s for s, _ in naive_rows]))
    stage_speed = float(np.median([count / s for s, _ in stage_rows]))
    naive_best = max(a for _, a in naive_rows)
    naive_time, stage_time = time_to(naive_rows, naive_best), time_to(stage_rows, naive_best)
    print(f"simple_cnn, digits, {torch.get_num_threads()} threads; medians over epochs")
    print(f"  naive ImageFolder loop : {naive_speed:7.0f} img/s  best test acc {naive_best:.4f}")
    print(
        f"  our train stage        : {stage_speed:7.0f} img/s  best test acc "
        f"{max(a for _, a in stage_rows):.4f}"
    )
    print(f"  compute limit          : {limit:7.0f} img/s")
    print(f"  SVC baseline (pixels)  :               test acc {svc:.4f}")
    print(f"img/s   naive / compute = {naive_speed / limit:.2f}")
    print(f"img/s   stage / compute = {stage_speed / limit:.2f}  (target >= 0.95)")
    if stage_time is None:
        print(f"time to {naive_best:.4f}: naive {naive_time:.1f}s; the stage never reached it")
    else:
        print(
            f"time to {naive_best:.4f} (naive's best): naive {naive_time:.1f}s, stage "
            f"{stage_time:.1f}s; stage / naive = {stage_time / naive_time:.2f}  (target <= 0.25)"
        )


if __name__ == "__main__":
    main()
