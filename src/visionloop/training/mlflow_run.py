"""What a training run records in MLflow: params, data version, per-epoch metrics, curves,
the class map, the bundle and (optionally) an mlflow.pytorch model.

Only the main process (rank 0) calls these. The run id is kept in the checkpoint and in
train.dir/run.json, so a resumed or rerun stage continues the same run.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from visionloop.artifacts import raw_store, split_table
from visionloop.artifacts.prepared import PreparedSplit
from visionloop.config import Config
from visionloop.tracking import git_state, run_name, start_run
from visionloop.training.recipe import Recipe


def start_or_resume_run(
    config: Config, run_id: str | None, name: str | None = None, parent_run_id: str | None = None
) -> str:
    """The run stays active until end_run: every epoch logs into it. Named `train <data>`
    unless the caller (a tune trial) names it."""
    name = name or run_name("train", data_label(config))
    return start_run(config, run_id, name, parent_run_id).info.run_id


def data_label(config: Config) -> str:
    """The data a run saw, in a few characters: the project folder and the drops ingested
    so far (`digits-003`), or the folder alone when there is no drops ledger."""
    drops, _ = raw_store.read_ledger(config.data.raw_dir)
    return f"{config.root.name}-{len(drops):03d}" if drops else config.root.name


def log_inputs(config: Config, splits: dict[str, PreparedSplit]) -> None:
    """One MLflow dataset input per split (name, digest, source, row count), so the UI's
    Dataset column says which images a run trained and was validated on."""
    import mlflow
    import pandas as pd

    logged = {d.dataset.digest for d in mlflow.active_run().inputs.dataset_inputs}
    source = str(split_table.path(config.split.dir))
    classes = np.asarray(raw_store.read_classes(config.data.raw_dir)[1], dtype=object)
    for name, split in splits.items():
        digest = split_digest(split)
        if digest in logged:  # a resumed run logged it already
            continue
        frame = pd.DataFrame({"sha256": list(split.sha256), "label": classes[split.labels]})
        with warnings.catch_warnings():
            # MLflow warns that a local path could be two (identical) source kinds.
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(
                frame, source=source, targets="label", name=data_label(config), digest=digest
            )
        mlflow.log_input(dataset, context=name, tags={"images": str(len(split))})


def split_digest(split: PreparedSplit) -> str:
    """The split's content: its images' sha256 and labels, in order (16 hex digits)."""
    digest = hashlib.sha256()
    for sha, label in zip(split.sha256, split.labels.tolist(), strict=True):
        digest.update(f"{sha}:{label}\n".encode())
    return digest.hexdigest()[:16]


def end_run(status: str = "FINISHED") -> None:
    import mlflow

    mlflow.end_run(status=status)


def log_start(config: Config, recipe: Recipe, world_size: int, device: str) -> None:
    """Params as trained (every auto resolved by the recipe), which of them the recipe chose,
    data version tags, the class map and the recipe (idempotent: a resume may repeat it)."""
    import mlflow

    params = _flatten(recipe.apply(config.train).model_dump(mode="json"), "train")
    chosen = sorted(key for key, choice in recipe.choices.items() if choice.chosen)
    params.update(
        {
            "image_size": recipe.image_size,
            "world_size": world_size,
            "device": device,
            "recipe.kind": recipe.facts.kind,
            "recipe.chosen": ",".join(chosen) or "-",
        }
    )
    existing = mlflow.active_run().data.params
    mlflow.log_params({k: v for k, v in params.items() if k not in existing})
    mlflow.set_tags(data_version(config))
    classes = config.data.raw_dir / raw_store.CLASSES
    mlflow.log_text(classes.read_text(), raw_store.CLASSES)
    mlflow.log_dict(recipe.to_json(), "recipe.json")


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    import mlflow

    mlflow.log_metrics(metrics, step=epoch)


def log_finish(
    config: Config, bundle_dir: Path, summary: dict[str, Any], history: list[dict[str, float]]
) -> None:
    import mlflow

    mlflow.log_metrics(
        {f"best_{k}": v for k, v in summary.items() if k.startswith("val_")},
        step=summary["best_epoch"],
    )
    mlflow.log_artifacts(str(bundle_dir), artifact_path="bundle")
    mlflow.log_figure(training_curves(history), "training_curves.png")
    if config.train.log_model:
        log_torch_model(bundle_dir)


def log_torch_model(bundle_dir: Path) -> None:
    """The bundle's network as an mlflow.pytorch model with signature and input example."""
    import mlflow
    import torch
    import torchvision
    from mlflow.models import infer_signature

    from visionloop.models.classifier import load_bundle

    classifier = load_bundle(bundle_dir)
    size = classifier.meta.image_size
    example = np.zeros((2, size, size, 3), dtype=np.uint8)
    inputs = classifier.to_input(example).numpy().astype(np.float32)
    with torch.inference_mode():
        outputs = classifier.module(torch.from_numpy(inputs)).numpy()
    mlflow.pytorch.log_model(
        classifier.module,
        name="model",
        signature=infer_signature(inputs, outputs),
        input_example=inputs,
        # Inferring requirements costs ~11 s; the model needs only these two.
        pip_requirements=[
            _pin("torch", torch.__version__),
            _pin("torchvision", torchvision.__version__),
        ],
    )


def _pin(package: str, version: str) -> str:
    """name==X.Y.Z without the local build tag (+cu130), which no index serves."""
    return f"{package}=={version.split('+')[0]}"


def training_curves(history: list[dict[str, float]]):
    from matplotlib.figure import Figure

    figure = Figure(figsize=(9, 3.5))
    loss_axes, accuracy_axes = figure.subplots(1, 2)
    epochs = [row["epoch"] for row in history]
    for split in ("train", "val"):
        loss_axes.plot(epochs, [row[f"{split}_loss"] for row in history], label=split)
        accuracy_axes.plot(epochs, [row[f"{split}_accuracy"] for row in history], label=split)
    loss_axes.set(xlabel="epoch", ylabel="loss")
    accuracy_axes.set(xlabel="epoch", ylabel="accuracy")
    loss_axes.legend()
    figure.tight_layout()
    return figure


def data_version(config: Config) -> dict[str, str]:
    """DVC's hashes of data/raw (its .dvc file) and of the split table (dvc.lock), the
    table's own sha256, and the git commit, each when known."""
    tags: dict[str, str] = {}
    raw_dvc = config.data.raw_dir.with_name(config.data.raw_dir.name + ".dvc")
    if raw_dvc.exists():
        outs = (yaml.safe_load(raw_dvc.read_text()) or {}).get("outs") or [{}]
        if "md5" in outs[0]:
            tags["data.raw_md5"] = str(outs[0]["md5"])
    table = split_table.path(config.split.dir)
    if table.exists():
        tags["data.split_sha256"] = hashlib.sha256(table.read_bytes()).hexdigest()
        locked = dvc_lock_md5(config.root, table)
        if locked:
            tags["data.split_md5"] = locked
    commit = git_state(config.root).commit
    if commit:
        tags["git.commit"] = commit
    return tags


PARAMS_FILE = "params.yaml"
DVC_LOCK = "dvc.lock"
LINEAGE_DIR = "lineage"


def lineage_tags(config: Config) -> dict[str, str]:
    """What a registered version records so that `visionloop reproduce` can rebuild it:
    the data version and commit, the seed, hashes of params.yaml and dvc.lock as they were,
    and the torch build and Python that trained it."""
    import platform

    import torch

    tags = data_version(config)
    tags["train.seed"] = str(config.train.seed)
    for name in (PARAMS_FILE, DVC_LOCK):
        path = config.root / name
        if path.exists():
            tags[f"lineage.{name.replace('.', '_')}_sha256"] = hashlib.sha256(
                path.read_bytes()
            ).hexdigest()
    tags["env.torch"] = torch.__version__
    tags["env.python"] = platform.python_version()
    return tags


def log_lineage_files(config: Config) -> None:
    """params.yaml and dvc.lock as they were, into the active run's `lineage/`."""
    import mlflow

    for name in (PARAMS_FILE, DVC_LOCK):
        path = config.root / name
        if path.exists():
            mlflow.log_artifact(str(path), artifact_path=LINEAGE_DIR)


def dvc_lock_md5(root: Path, path: Path) -> str | None:
    """The md5 dvc.lock records for an output, if a stage lists it."""
    lock = root / "dvc.lock"
    if not lock.exists() or not path.is_relative_to(root):
        return None
    wanted = path.relative_to(root).as_posix()
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages") or {}
    for stage in stages.values():
        for out in stage.get("outs") or []:
            if out.get("path") == wanted and "md5" in out:
                return str(out["md5"])
    return None


def _flatten(values: dict[str, Any], prefix: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}.{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name))
        else:
            flat[name] = value
    return flat
