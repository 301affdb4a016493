"""The pipeline's stages: one plain function each, run by `visionloop stage NAME`.

DVC calls a stage through the CLI (`cmd` in dvc.yaml) and the Prefect flow calls the same
function, so outputs and dvc.lock are the same whichever way the user ran it. Every stage is
a module with a `run(config)` function: it takes the Config, reads and writes files at paths
from it, and returns a small JSON-able dict. `params` lists exactly the params.yaml sections
or keys the stage reads: a test keeps it and dvc.yaml's `params` in step.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from visionloop.config import Config


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # holds `run(config)`; imported only when the stage runs
    params: tuple[str, ...]
    summary: str

    def load(self) -> Callable[[Config], dict[str, Any]]:
        return importlib.import_module(self.module).run


# In pipeline order. Each issue that adds a stage adds its line here and in dvc.yaml.
STAGES: dict[str, Stage] = {
    "validate": Stage(
        name="validate",
        module="visionloop.data.validation",
        params=("data.raw_dir", "data.validation", "data.ingest.min_side", "data.ingest.max_side"),
        summary="Great Expectations suite over the manifest; blocking failures stop the run.",
    ),
    "split": Stage(
        name="split",
        module="visionloop.data.splits",
        params=("data.raw_dir", "split"),
        summary="Assign new images to train/val/test (stable; near-duplicates stay together).",
    ),
    "prepare": Stage(
        name="prepare",
        module="visionloop.data.prepare",
        params=("data.raw_dir", "split.dir", "prepare"),
        summary="Decode and resize each split image once into uint8 tensors (content-keyed).",
    ),
    "train": Stage(
        name="train",
        module="visionloop.training.engine",
        # registry.* only says where the run is reported, not what is trained: not a param
        params=("data.raw_dir", "split.dir", "prepare.dir", "train"),
        summary="Train a model on the prepared cache with early stopping; write the bundle.",
    ),
    "evaluate": Stage(
        name="evaluate",
        module="visionloop.promotion.evaluate",
        params=(
            "evaluate",
            "monitoring.explain_per_class",
            "prepare.dir",
            "train.dir",
            "registry.tracking_uri",
            "registry.experiment",
            "registry.artifact_dir",
        ),
        summary="Evaluate the candidate on the test split: metrics, calibration, plots, MLflow.",
    ),
    "gate": Stage(
        name="gate",
        module="visionloop.promotion.gate",
        # serving.export and max_int8_drop: registering (act_in_pipeline) builds the exports
        params=(
            "gate",
            "evaluate.batch_size",
            "prepare.dir",
            "train.dir",
            "registry",
            "serving.max_int8_drop",
            "serving.export",
        ),
        summary="Judge the candidate against the registry's champion; write the verdict.",
    ),
}


def run_stage(name: str, config: Config) -> dict[str, Any]:
    return STAGES[name].load()(config)
