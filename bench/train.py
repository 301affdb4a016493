"""Training speed, side by side in one run on the same model (simple_cnn) and data (digits):

1. naive: the seed's loop, torchvision ImageFolder over PNG files + ToTensor + Adam,
   decoding every image every epoch;
2. stage: visionloop's train stage (default params) on the prepared cache;
3. compute: forward + backward + optimizer step on tensors already in memory.

Both trainers are evaluated after every epoch on the same held-out digits (the bench puts
them in the stage's `val` split, so early stopping here sees them: fine for a speed bench,
never for a real run). Prints images/s and time to reach the naive loop's best accuracy,
as ratios. Run: `python -m bench.train [--size 32] [--epochs 15]` from the repo root.
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

from visionloop.config import load_config
from visionloop.models import build_model
from visionloop.prepared import open_prepared_split, write_prepared_split


def write_image_folder(root: Path, images: np.ndarray, labels: np.ndarray) -> Path:
    for index, (image, label) in enumerate(zip(images, labels, strict=True)):
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(root / str(label) / f"{index:04d}.png")
    return root


def naive_loop(train_dir: Path, test: tuple[np.ndarray, np.ndarray], size: int, epochs: int):
    """The seed's loop; returns per-epoch (cumulative train seconds, test accuracy, img/s)."""
    from torchvision import datasets, transforms

    torch.manual_seed(0)
    dataset = datasets.ImageFolder(str(train_dir), transform=transforms.ToTensor())
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, shuffle=True)
    model = build_model("simple_cnn", num_classes=10, image_size=size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    test_x = torch.from_numpy(test[0]).permute(0, 3, 1, 2).float() / 255
    rows, spent = [], 0.0
    for _ in range(epochs):
        model.train()
        started = time.perf_counter()
        for images, labels in loader:
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(images), labels).backward()
            optimizer.step()
        elapsed = time.perf_counter() - started
        spent += elapsed
        model.eval()
        with torch.inference_mode():
            accuracy = (model(test_x).argmax(1).numpy() == test[1]).mean()
        rows.append((spent, float(accuracy), len(dataset) / elapsed))
    return rows


def stage_run(root: Path, prepared: Path, raw: Path):
    """Our stage with the default params; per-epoch (cumulative seconds, accuracy, img/s)."""
    from visionloop.training.engine import train

    config = load_config(
        REPO_PARAMS,
        overrides={
            "data": {"raw_dir": str(raw)},
            "prepare": {"dir": str(prepared)},
            "registry": {
                "tracking_uri": f"sqlite:///{root}/mlflow.db",
                "artifact_dir": str(root / "artifacts"),
            },
            "train": {
                "dir": str(root / "candidate"),
                "checkpoint_dir": str(root / "checkpoints"),
                "progress": "off",
                "log_model": False,
            },
        },
    )
    train(config)
    import csv

    with open(config.train.dir / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    spent, rows = 0.0, []
    for row in history:
        spent += float(row["epoch_time_s"])
        rows.append((spent, float(row["val_accuracy"]), float(row["images_per_s"])))
    return rows, config


def compute_limit(images: np.ndarray, labels: np.ndarray, size: int, channels_last: bool):
    """img/s of forward+backward+AdamW step on normalised tensors already in memory."""
    torch.manual_seed(0)
    model = build_model("simple_cnn", num_classes=10, image_size=size)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = (torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255 - 0.3) / 0.4
    x = x.contiguous(memory_format=memory_format)
    y = torch.from_numpy(labels)
    batches = list(zip(x.split(64), y.split(64), strict=True))
    seen, started = 0, time.perf_counter()
    for _ in range(5):
        for inputs, targets in batches:
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(model(inputs), targets).backward()
            optimizer.step()
            seen += len(targets)
    return seen / (time.perf_counter() - started)


def svc_test_accuracy(images, labels, parts) -> float:
    """scikit-learn's SVC (defaults) on the raw grey pixels of the same split."""
    from sklearn.svm import SVC

    pixels = images[..., 0].reshape(len(images), -1) / 255.0
    model = SVC().fit(pixels[parts["train"]], labels[parts["train"]])
    return float((model.predict(pixels[parts["test"]]) == labels[parts["test"]]).mean())


def time_to(rows, target: float) -> float | None:
    return next((spent for spent, accuracy, _ in rows if accuracy >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=15, help="epochs of the naive loop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-train-") as tmp:
        root = Path(tmp)
        paths = write_digits_cache(root, size=args.size)
        test = open_prepared_split(paths["prepared_dir"], "test")
        test_images, test_labels = np.array(test.images), np.array(test.labels)
        write_prepared_split(  # the stage validates on the held-out digits
            paths["prepared_dir"], "val", test_images, test_labels, list(test.sha256)
        )
        images, labels = digits_rgb(args.size)
        parts = stratified_split(labels, (0.70, 0.15, 0.15), seed=0)
        train_index = parts["train"]
        folder = write_image_folder(root / "png", images[train_index], labels[train_index])

        naive = naive_loop(folder, (test_images, test_labels), args.size, args.epochs)
        ours, config = stage_run(root / "stage", paths["prepared_dir"], paths["raw_dir"])
        limit = compute_limit(
            images[train_index], labels[train_index], args.size, config.train.channels_last
        )
        other_layout = compute_limit(
            images[train_index], labels[train_index], args.size, not config.train.channels_last
        )

    report(naive, ours, limit, other_layout, config.train.channels_last, torch.get_num_threads())
    svc = svc_test_accuracy(images, labels, parts)
    print(f"SVC baseline (raw pixels, same split): test accuracy {svc:.4f}")


def report(naive, ours, limit, other_layout, channels_last, threads) -> None:
    naive_best = max(accuracy for _, accuracy, _ in naive)
    naive_time = time_to(naive, naive_best)
    our_time = time_to(ours, naive_best)
    naive_speed = float(np.median([s for _, _, s in naive]))
    our_speed = float(np.median([s for _, _, s in ours]))
    print(f"simple_cnn on the digits, {threads} torch threads; img/s are medians over epochs")
    print(f"  naive ImageFolder loop : {naive_speed:8.0f} img/s  best acc {naive_best:.4f}")
    our_best = max(accuracy for _, accuracy, _ in ours)
    print(f"  our train stage        : {our_speed:8.0f} img/s  best acc {our_best:.4f}")
    print(f"  compute limit          : {limit:8.0f} img/s  (channels_last={channels_last})")
    print(
        f"  compute, other layout  : {other_layout:8.0f} img/s  (channels_last={not channels_last})"
    )
    print(f"images/s  naive / limit  = {naive_speed / limit:.2f}")
    print(f"images/s  stage / limit  = {our_speed / limit:.2f}   (target >= 0.95)")
    print(f"images/s  stage / naive  = {our_speed / naive_speed:.2f}")
    if our_time is None:
        print(f"time to {naive_best:.4f}: naive {naive_time:.1f}s, stage never reached it")
    else:
        print(
            f"time to naive's best ({naive_best:.4f}): naive {naive_time:.1f}s, stage "
            f"{our_time:.1f}s, ratio stage/naive = {our_time / naive_time:.2f} (target <= 0.33)"
        )


if __name__ == "__main__":
    main()
