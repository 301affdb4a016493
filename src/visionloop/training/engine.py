"""`train(config)`: the train stage from prepared cache to model bundle, resumable.

The checkpoint written after every epoch holds everything that decides what happens next:
weights, optimizer, scheduler, grad scaler, early-stopping state, the best weights so far,
the history, the epoch and step, and the MLflow run id. Randomness is reseeded at the start
of every epoch from (seed, epoch, rank), so a run resumed from epoch k draws the same numbers
as an uninterrupted run does in epoch k+1 (see docs/training.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DistributedSampler

from visionloop.artifacts import candidate
from visionloop.artifacts.bundle import BundleMeta, bundle_digest, save_bundle
from visionloop.artifacts.prepared import normalisation_stats, read_stats, require_split
from visionloop.config import Config, TrainConfig
from visionloop.errors import VisionloopError
from visionloop.models.zoo import (
    build_model,
    freeze,
    load_pretrained,
    load_torchvision_weights,
    weights_normalisation,
)
from visionloop.progress import Progress
from visionloop.training import mlflow_run
from visionloop.training.augment import Augment
from visionloop.training.checkpoint import (
    clear_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)
from visionloop.training.data import (
    TrainImages,
    balanced_indices,
    batch_count,
    image_size_of,
    inverse_frequency_weights,
    read_class_map,
    shard,
)
from visionloop.training.early_stopping import EarlyStopping
from visionloop.training.ema import WeightAverage
from visionloop.training.loop import cpu_state, train_one_epoch, unwrap, validate
from visionloop.training.optim import build_optimizer, build_scheduler
from visionloop.training.recipe import Recipe, choose_recipe, facts_from_cache
from visionloop.training.runtime import (
    Runtime,
    epoch_seed,
    seed_everything,
    start_runtime,
    stop_runtime,
)

log = logging.getLogger(__name__)

RESUME_MODES = ("never", "auto", "always")
# Params that change where things go or how they are shown, not what is trained.
NOT_FINGERPRINTED = {"dir", "checkpoint_dir", "progress", "log_model"}
# Called after each epoch (main process) with the epoch and its metrics; it may raise
# TrainingStopped to end the run there (a tune trial the pruner stops).
EpochCallback = Callable[[int, dict[str, float]], None]


class TrainingStopped(Exception):
    """Raised by an epoch callback: stop after this epoch; the MLflow run ends KILLED."""


def run(config: Config) -> dict[str, Any]:
    """The DVC/Prefect stage: continues an interrupted run of the same params and data."""
    return train(config, resume="auto")


def train(
    config: Config,
    resume: str = "never",
    on_epoch: EpochCallback | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
) -> dict[str, Any]:
    """Train, early-stop, write the bundle; resume: never, auto (same params and data), always.
    `on_epoch` sees every epoch's metrics; `run_name` and `parent_run_id` name the MLflow run
    and make it a child run (tune trials)."""
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    runtime = start_runtime(config.train)
    try:
        return _train(config, resume, runtime, on_epoch, (run_name, parent_run_id))
    finally:
        stop_runtime(runtime)


class Session:
    """Everything one training run builds before its first epoch."""

    def __init__(self, config: Config, runtime: Runtime) -> None:
        self.config, self.runtime = config, runtime
        seed_everything(config.train.seed)
        self.class_map = read_class_map(config.data.raw_dir)
        self.train_split = require_split(config.prepare.dir, "train")
        self.val_split = require_split(config.prepare.dir, "val")
        for name, split in (("train", self.train_split), ("val", self.val_split)):
            if len(split) == 0:
                raise VisionloopError(
                    f"the prepared {name} split is empty; training and early stopping need "
                    "both train and val images (add data or change split.fractions)"
                )
        self.image_size = image_size_of(self.train_split, "train")
        if image_size_of(self.val_split, "val") != self.image_size:
            raise VisionloopError("prepared train and val images differ in size; rerun prepare")
        self.stats = read_stats(config.prepare.dir) or {}
        num_classes = len(self.class_map.classes)
        facts = facts_from_cache(self.stats, self.train_split, self.val_split, num_classes)
        self.recipe: Recipe = choose_recipe(facts, config)
        # From here on every auto is resolved: the run depends on concrete values only.
        self.cfg = cfg = self.recipe.apply(config.train)
        self.mean, self.std = self._normalisation()
        self.train_images = TrainImages(self.train_split, runtime.device)
        self.model = _build(cfg, num_classes, self.image_size, runtime)
        self.frozen = cfg.freeze != "none"
        self.net = _wrap(self.model, cfg, runtime)
        self.sampler = DistributedSampler(
            range(len(self.train_split)),
            num_replicas=runtime.world_size,
            rank=runtime.rank,
            shuffle=True,
            seed=cfg.seed,
        )
        self.steps_per_epoch = batch_count(len(self.epoch_indices(1)), cfg.batch_size)
        self.optimizer = build_optimizer(self.model, cfg)
        self.scheduler = build_scheduler(self.optimizer, cfg, self.steps_per_epoch)
        self.scaler = torch.amp.GradScaler(
            runtime.device.type, enabled=runtime.amp_dtype == torch.float16
        )
        self.augment = Augment(
            cfg.augment, self.mean, self.std, num_classes, runtime.device, cfg.channels_last
        )
        self.class_weights = loss_weights(cfg, self.train_split.labels, num_classes, runtime)
        self.ema = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay > 0 else None
        es = cfg.early_stopping
        self.early = EarlyStopping(es.mode, es.patience, es.min_delta)
        self.fingerprint = fingerprints(cfg, self, runtime.world_size)
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.epoch = 0
        self.finished = False
        self.run_id: str | None = None

    def _normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """ImageNet weights expect the statistics they were trained with; else the train set's."""
        if self.cfg.pretrained == "torchvision":
            return weights_normalisation(self.cfg.model)
        return normalisation_stats(self.config.prepare.dir, self.train_split)

    def epoch_indices(self, epoch: int) -> list[int] | np.ndarray:
        """This process's train images for an epoch, in order: a shuffle, or a class-balanced
        draw; both depend on (seed, epoch) only."""
        if self.cfg.class_balance == "balanced_sampler":
            drawn = balanced_indices(self.train_split.labels, self.cfg.seed, epoch)
            return shard(drawn, self.runtime.rank, self.runtime.world_size)
        self.sampler.set_epoch(epoch)
        return list(self.sampler)

    def splits_for_inputs(self) -> dict[str, Any]:
        """train and val as trained on, and test when prepared: the run's MLflow inputs."""
        splits = {"train": self.train_split, "val": self.val_split}
        with contextlib.suppress(VisionloopError):
            splits["test"] = require_split(self.config.prepare.dir, "test")
        return splits

    def evaluated_model(self) -> nn.Module:
        """What validation scores and the bundle keeps: the weight average when there is one."""
        return self.ema.module if self.ema is not None else self.net

    def restore(self, state: dict[str, Any]) -> None:
        unwrap(self.net).load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.early.load_state_dict(state["early_stopping"])
        if self.ema is not None and state.get("ema") is not None:  # else it starts from here
            self.ema.load_state_dict(state["ema"])
        self.best_state = state["best_model"]
        self.history = list(state["history"])
        self.epoch = int(state["epoch"])
        # Not the stored flag: `--resume` with more epochs continues a finished run.
        self.finished = self.early.should_stop or self.epoch >= self.cfg.epochs
        self.run_id = state["run_id"]

    def checkpoint_state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.scheduler.last_epoch,  # the scheduler counts optimizer steps
            "model": cpu_state(self.net),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "early_stopping": self.early.state_dict(),
            "ema": self.ema.state_dict() if self.ema is not None else None,
            "best_model": self.best_state,
            "history": self.history,
            "finished": self.finished,
            "run_id": self.run_id,
            "fingerprint": self.fingerprint,
        }

    def run_epoch(self, progress: Progress) -> dict[str, float]:
        cfg, runtime = self.cfg, self.runtime
        self.epoch += 1
        torch.manual_seed(epoch_seed(cfg.seed, self.epoch, runtime.rank))
        self.unfreeze_when_due()
        progress.start_epoch(self.epoch, cfg.epochs, self.steps_per_epoch)
        metrics = train_one_epoch(
            self.net,
            self.train_images.batches(self.epoch_indices(self.epoch), cfg.batch_size),
            self.augment,
            self.optimizer,
            self.scheduler,
            self.scaler,
            runtime,
            label_smoothing=cfg.label_smoothing,
            grad_clip=cfg.grad_clip,
            progress=progress,
            class_weights=self.class_weights,
            ema=self.ema,
        )
        metrics.update(
            validate(
                self.evaluated_model(),
                self.val_split,
                self.augment,
                runtime,
                cfg.batch_size,
                len(self.class_map.classes),
                cfg.tta,
            )
        )
        metrics["lr"] = float(self.scheduler.get_last_lr()[-1])  # the head's group
        metrics["epoch_time_s"] = metrics.pop("train_time_s")
        if self.early.update(metrics[cfg.early_stopping.monitor], self.epoch):
            self.best_state = cpu_state(self.evaluated_model())
        self.finished = self.early.should_stop or self.epoch >= cfg.epochs
        self.history.append({"epoch": self.epoch, **metrics})
        return metrics

    def unfreeze_when_due(self) -> None:
        """freeze + unfreeze_after: after that many epochs every layer trains (a resumed run
        past that point starts unfrozen too)."""
        cfg = self.cfg
        if not self.frozen or cfg.unfreeze_after == 0 or self.epoch <= cfg.unfreeze_after:
            return
        self.model.requires_grad_(True)
        self.frozen = False
        if self.runtime.distributed:  # DDP registers its hooks for trainable parameters only
            self.net = _wrap(self.model, cfg, self.runtime)


def loss_weights(
    cfg: TrainConfig, labels: np.ndarray, num_classes: int, runtime: Runtime
) -> torch.Tensor | None:
    """Per-class loss weights for class_balance: weighted_loss, else None (plain loss)."""
    if cfg.class_balance != "weighted_loss":
        return None
    weights = inverse_frequency_weights(labels, num_classes)
    return torch.tensor(weights, dtype=torch.float32, device=runtime.device)


def _build(cfg: TrainConfig, num_classes: int, image_size: int, runtime: Runtime) -> nn.Module:
    fresh: list[str] = []
    try:
        model = build_model(cfg.model, num_classes=num_classes, image_size=image_size)
    except ValueError as exc:
        raise VisionloopError(f"train.model: {exc}") from None
    if cfg.pretrained == "torchvision":
        fresh = load_torchvision_weights(model, cfg.model, cfg.allow_download)
    elif cfg.pretrained is not None:
        fresh = load_pretrained(model, cfg.pretrained)
    if cfg.pretrained is not None and fresh and runtime.is_main:
        log.warning("pretrained weights: %s re-initialised (shape differs)", ", ".join(fresh))
    freeze(model, cfg.model, cfg.freeze)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    return model.to(runtime.device, memory_format=memory_format)


def _wrap(model: nn.Module, cfg: TrainConfig, runtime: Runtime) -> nn.Module:
    net = model
    if runtime.distributed:
        device_ids = [runtime.device.index] if runtime.device.type == "cuda" else None
        net = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    if cfg.compile:
        net = torch.compile(net)
    return net


def fingerprints(cfg: TrainConfig, session: Session, world_size: int) -> dict[str, str]:
    """Hashes of what decides the run: params (every auto resolved), and data (images,
    labels, class map, stats). A checkpoint is only continued automatically when both match."""
    params = cfg.model_dump(mode="json", exclude=NOT_FINGERPRINTED)
    params["world_size"] = world_size
    data = hashlib.sha256()
    data.update(json.dumps([session.class_map.version, session.class_map.classes]).encode())
    data.update(json.dumps([session.mean, session.std]).encode())
    for split in (session.train_split, session.val_split):
        data.update(json.dumps([list(split.images.shape), list(split.sha256)]).encode())
        data.update(split.labels.tobytes())
    return {
        "params": hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest(),
        "data": data.hexdigest(),
    }


def checkpoint_to_resume(
    folder: Path, mode: str, fingerprint: dict[str, str]
) -> dict[str, Any] | None:
    if mode == "never":
        return None
    found = load_latest_checkpoint(folder)
    if found is None:
        if mode == "always":
            raise VisionloopError(
                f"{folder}: no usable checkpoint to resume from; train without --resume"
            )
        return None
    path, state = found
    if state["fingerprint"]["data"] != fingerprint["data"]:
        if mode == "always":
            raise VisionloopError(
                f"{path}: the prepared data or class map changed since this checkpoint; "
                "train without --resume"
            )
        return None
    if state["fingerprint"]["params"] != fingerprint["params"]:
        if mode == "auto":
            return None
        log.warning("%s: train params changed since this checkpoint; resuming with the new", path)
    return state


def _train(
    config: Config,
    resume: str,
    runtime: Runtime,
    on_epoch: EpochCallback | None,
    naming: tuple[str | None, str | None],
) -> dict[str, Any]:
    session = Session(config, runtime)
    cfg = session.cfg
    state = checkpoint_to_resume(cfg.checkpoint_dir, resume, session.fingerprint)
    runtime.barrier()  # every process has read the checkpoint before any is deleted
    if state is not None:
        session.restore(state)
    elif runtime.is_main:
        clear_checkpoints(cfg.checkpoint_dir)
    resumed_from = session.epoch if state is not None else None
    try:
        if runtime.is_main:
            session.run_id = mlflow_run.start_or_resume_run(config, session.run_id, *naming)
            candidate.write_run_record(cfg.dir, session.run_id, resumed_from)
            candidate.write_recipe(cfg.dir, session.recipe.to_json())
            mlflow_run.log_start(config, session.recipe, runtime.world_size, str(runtime.device))
            mlflow_run.log_inputs(config, session.splits_for_inputs())
        with Progress(cfg.progress, enabled=runtime.is_main) as progress:
            for line in session.recipe.lines():
                progress.message(line)
            if resumed_from is not None:
                progress.message(f"resuming after epoch {resumed_from} from {cfg.checkpoint_dir}")
            while not session.finished:
                metrics = session.run_epoch(progress)
                if runtime.is_main:
                    mlflow_run.log_epoch(metrics, session.epoch)
                    save_checkpoint(cfg.checkpoint_dir, session.epoch, session.checkpoint_state())
                runtime.barrier()
                note = "  *" if session.early.best_epoch == session.epoch else ""
                progress.epoch_done(session.epoch, cfg.epochs, metrics, note)
                if on_epoch is not None and runtime.is_main:
                    on_epoch(session.epoch, metrics)
            if session.early.should_stop:
                progress.message(
                    f"early stop after epoch {session.epoch}: no {cfg.early_stopping.monitor} "
                    f"gain for {cfg.early_stopping.patience} epochs"
                )
        if not runtime.is_main:
            return {}
        summary = finish(session, resumed_from)
    except BaseException as exc:
        if runtime.is_main:
            mlflow_run.end_run("KILLED" if isinstance(exc, TrainingStopped) else "FAILED")
        raise
    mlflow_run.end_run()
    return summary


def finish(session: Session, resumed_from: int | None) -> dict[str, Any]:
    """Best weights into the bundle; metrics, history and run files; the run's artifacts."""
    cfg = session.cfg
    model = unwrap(session.net)
    model.load_state_dict(session.best_state)
    meta = BundleMeta(
        arch=cfg.model,
        classes=session.class_map.classes,
        image_size=session.image_size,
        mean=tuple(session.mean),
        std=tuple(session.std),
        class_map_version=session.class_map.version,
        resize=session.stats.get("resize", BundleMeta.resize),
        tta=cfg.tta,
    )
    bundle_dir = save_bundle(candidate.bundle_dir(cfg.dir), model, meta)
    candidate.write_run_record(cfg.dir, session.run_id, resumed_from, bundle_digest(bundle_dir))
    best = session.history[session.early.best_epoch - 1]
    summary = {
        "best_epoch": session.early.best_epoch,
        "epochs_run": session.epoch,
        "stopped_early": session.early.should_stop,
        "val_accuracy": best["val_accuracy"],
        "val_f1_macro": best["val_f1_macro"],
        "val_min_recall": best["val_min_recall"],
        "val_loss": best["val_loss"],
        "train_accuracy": best["train_accuracy"],
        "train_loss": best["train_loss"],
        "images_per_s": sum(r["images_per_s"] for r in session.history) / len(session.history),
        "train_time_s": sum(r["epoch_time_s"] for r in session.history),
    }
    candidate.write_metrics(cfg.dir, summary)
    candidate.write_history(cfg.dir, session.history)
    mlflow_run.log_finish(session.config, bundle_dir, summary, session.history)
    return {
        **summary,
        "bundle": str(bundle_dir),
        "recipe": {key: choice.value for key, choice in session.recipe.choices.items()},
        "run_id": session.run_id,
        "resumed_from_epoch": resumed_from,
    }
