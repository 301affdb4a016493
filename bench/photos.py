"""A photo set through the user's path, from scratch, with everything the report needs.

    python bench/photos.py --dataset /work/shared/datasets/trashnet-sub
    python bench/photos.py --dataset DIR --per-class 60 --set train.epochs=10 --json

Makes a fresh project (git + DVC, this checkout's dvc.yaml, params.yaml and code) in a
temporary folder, copies the dataset's class folders in as one drop under data/incoming,
runs `visionloop data ingest` and `dvc repro` (validate, split, prepare, train, evaluate,
gate) as a user would, then prints: the recipe the chooser picked and why, training time
and images/s per epoch, test top-1 / macro-F1 / lowest class recall from the evaluate
stage, the gate's verdict with its baselines, and the same-split SVC figure
(bench/svc_baseline.py) beside them. `--set KEY=VALUE` overrides a params.yaml key (YAML
value); `--per-class N` takes the first N files of each class (sorted by name).
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

import yaml

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from svc_baseline import same_split_svc  # noqa: E402

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def main() -> None:
    args = parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vl-photos-"))
    try:
        result = measure(args.dataset, work / "project", args.per_class, args.set)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=2) if args.json else report(result))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, required=True, help="a folder of class folders")
    parser.add_argument("--per-class", type=int, default=None, help="at most N images a class")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a params.yaml override"
    )
    parser.add_argument("--keep", help="work in this folder and keep it")
    parser.add_argument("--json", action="store_true", help="print the result as JSON")
    # On a loaded 2-core machine two OpenMP threads spin-wait on each other at every op and
    # burn 3-5x the CPU; --threads 1 keeps a shared machine's figures meaningful.
    parser.add_argument("--threads", type=int, default=None, help="OMP_NUM_THREADS [torch's]")
    args = parser.parse_args()
    if args.threads:
        os.environ["OMP_NUM_THREADS"] = str(args.threads)
    return args


def measure(dataset: Path, project: Path, per_class: int | None, sets: list[str]) -> dict:
    new_project(project, sets)
    copied = copy_drop(dataset, project / "data" / "incoming" / dataset.name, per_class)
    run(project, "visionloop", "data", "ingest", dataset.name)
    run(project, "git", "add", "-A")
    run(project, "git", "commit", "-qm", f"ingest {dataset.name}")
    started = time.perf_counter()
    run(project, "dvc", "repro")
    repro_seconds = time.perf_counter() - started
    return {
        "dataset": str(dataset),
        "files_copied": copied,
        "overrides": sets,
        "threads": os.environ.get("OMP_NUM_THREADS", "torch's default"),
        "repro_seconds": round(repro_seconds, 1),
        **results(project),
        "same_split_baseline": same_split_svc(project),
    }


def new_project(path: Path, sets: list[str]) -> None:
    path.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, path / name)
    shutil.copytree(
        REPO_ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    params = yaml.safe_load((path / "params.yaml").read_text())
    for item in sets:
        key, _, value = item.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node[part]
        node[leaf] = yaml.safe_load(value)
    params["train"]["progress"] = "lines"
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run(path, "git", "init", "-q")
    run(path, "dvc", "init", "-q")
    shutil.copy(REPO_ROOT / ".dvc" / "config", path / ".dvc" / "config")


def copy_drop(dataset: Path, drop: Path, per_class: int | None) -> int:
    """The dataset's class folders (images only), the first `per_class` of each by name."""
    copied = 0
    for folder in sorted(p for p in dataset.iterdir() if p.is_dir()):
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        (drop / folder.name).mkdir(parents=True)
        for file in files[:per_class]:
            shutil.copy(file, drop / folder.name / file.name)
            copied += 1
    return copied


def run(project: Path, *command: str) -> str:
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONPATH=str(project / "src"))
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.setdefault("GIT_AUTHOR_NAME", "bench")
    env.setdefault("GIT_AUTHOR_EMAIL", "bench@example.com")
    env.setdefault("GIT_COMMITTER_NAME", "bench")
    env.setdefault("GIT_COMMITTER_EMAIL", "bench@example.com")
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command)} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        )
    return done.stdout + done.stderr


def results(project: Path) -> dict:
    read = lambda relative: json.loads((project / relative).read_text())  # noqa: E731
    evaluation = read("reports/evaluate/metrics.json")
    per_class = read("reports/evaluate/per_class.json")
    worst = min(per_class, key=lambda row: row["recall"])
    training = read("models/candidate/metrics.json")
    history = (project / "models/candidate/history.csv").read_text().splitlines()
    header = history[0].split(",")
    speeds = [float(line.split(",")[header.index("images_per_s")]) for line in history[1:]]
    verdict = read("reports/gate/verdict.json")
    audit = read("data/splits/audit.json")
    return {
        "images_per_split": audit["images_per_split"],
        "recipe": read("models/candidate/recipe.json"),
        "training": {
            key: training[key]
            for key in ("epochs_run", "best_epoch", "stopped_early", "train_time_s", "images_per_s")
        }
        | {"images_per_s_min": min(speeds), "images_per_s_max": max(speeds)},
        "test": {
            "n": int(evaluation["n_test"]),
            "top1": evaluation["top1"],
            "f1_macro": evaluation["f1_macro"],
            "min_class_recall": evaluation["min_class_recall"],
            "min_recall_class": worst["class"],
            "per_class_recall": {row["class"]: row["recall"] for row in per_class},
        },
        "gate": {
            "passed": verdict["passed"],
            "mode": verdict["mode"],
            "summary": verdict["summary"],
            "baselines": {
                name: round(score["top1"], 4)
                for name, score in verdict["statistics"].get("baselines", {}).items()
            },
        },
    }


def report(result: dict) -> str:
    recipe, training, test = result["recipe"], result["training"], result["test"]
    svc = result["same_split_baseline"]
    facts = recipe["facts"]
    lines = [
        f"dataset {result['dataset']}: {result['files_copied']} files, "
        f"split {result['images_per_split']}",
        f"recipe ({recipe['kind']}; {facts['classes']} classes, median shorter side "
        f"{facts['short_side']} px, train per class {facts['train_per_class']}):",
    ]
    for key, choice in recipe["choices"].items():
        origin = "auto" if choice["chosen"] else "set"
        lines.append(f"  {key:32} {json.dumps(choice['value']):14} {origin}  {choice['reason']}")
    lines += [
        f"training: {training['epochs_run']} epochs (best {training['best_epoch']}), "
        f"{training['train_time_s']:.0f} s of training, {training['images_per_s']:.0f} images/s "
        f"per epoch on average ({training['images_per_s_min']:.0f}..."
        f"{training['images_per_s_max']:.0f}); dvc repro {result['repro_seconds']:.0f} s",
        f"test ({test['n']} images): top-1 {test['top1']:.4f}, macro-F1 {test['f1_macro']:.4f}, "
        f"lowest class recall {test['min_class_recall']:.4f} ({test['min_recall_class']})",
        "  per-class recall: "
        + ", ".join(f"{name} {value:.2f}" for name, value in test["per_class_recall"].items()),
        f"same-split SVC (C=10, 32x32, fitted on {svc['fit_images']} train+val images): "
        f"grey {svc['svc_grey_top1']:.4f}, RGB {svc['svc_rgb_top1']:.4f}",
        f"  top-1 minus SVC grey: {100 * (test['top1'] - svc['svc_grey_top1']):+.1f} points "
        f"(target >= +15); minus SVC RGB: {100 * (test['top1'] - svc['svc_rgb_top1']):+.1f}",
        f"gate: {result['gate']['summary']}",
    ]
    if result["overrides"]:
        lines.append(f"overrides: {' '.join(result['overrides'])}")
    lines.append(f"threads: {result['threads']}")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
