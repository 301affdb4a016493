"""Fixtures for the evaluate / gate / registry tests: real models, real MLflow in tmp_path."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_PARAMS
from tests.integration.gate.trained import test_split
from visionloop.artifacts.prepared import write_prepared_split
from visionloop.config import Config, load_config

# Floors the briefly trained "weak" digits model (top-1 ~0.7) clears and the label-shuffled
# one (~0.1) does not. No first-model baselines: these tests hold no train split to fit them
# on (tests/integration/gate/test_first_model_baselines.py covers them).
TEST_GATE = {
    "min_top1": 0.5,
    "min_class_recall": 0.1,
    "max_class_recall_drop": 0.15,
    "first_model_baselines": [],
}


def path_overrides(root: Path) -> dict:
    """Every path and the MLflow store moved under root; the test floors for the gate."""
    return {
        "prepare": {"dir": str(root / "prepared")},
        "train": {"dir": str(root / "candidate")},
        "evaluate": {"dir": str(root / "reports/evaluate")},
        "gate": {"dir": str(root / "reports/gate"), **TEST_GATE},
        "registry": {
            "tracking_uri": f"sqlite:///{root}/mlflow.db",
            "artifact_dir": str(root / "artifacts"),
            "dir": str(root / "registry"),
        },
        # These tests judge and move versions; the ONNX exports that registration also
        # builds (a few seconds a version) are tested in tests/integration/serving.
        "serving": {"export": {"onnx": False}},
    }


@dataclass
class Project:
    root: Path
    config: Config
    bundles: dict[str, Path]

    def use_candidate(self, name: str) -> None:
        """Put a trained bundle where the train stage would have written it."""
        target = self.config.train.dir / "model"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.bundles[name], target)

    def with_gate(self, **gate) -> Config:
        return self.with_overrides(gate=gate)

    def with_overrides(self, **sections: dict) -> Config:
        overrides = path_overrides(self.root)
        for section, values in sections.items():
            overrides[section] = {**overrides.get(section, {}), **values}
        return load_config(REPO_PARAMS, overrides=overrides)

    def params_file(self) -> Path:
        """A params.yaml for the CLI and subprocesses, pointing at this test's folders."""
        params = yaml.safe_load(REPO_PARAMS.read_text())
        for section, values in path_overrides(self.root).items():
            params[section].update(values)
        path = self.root / "params.yaml"
        path.write_text(yaml.safe_dump(params))
        return path

    def release(self, name: str, config: Config | None = None) -> tuple[dict, dict]:
        """What the flow does for a new candidate: gate, then register and promote."""
        from visionloop.promotion.gate import run as gate
        from visionloop.promotion.registry import register_and_promote

        config = config or self.config
        self.use_candidate(name)
        verdict = gate(config)
        return verdict, register_and_promote(config)


@pytest.fixture
def project(tmp_path, bundles, monkeypatch) -> Project:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # a stray ./mlruns would show up here
    images, labels, sha256 = test_split()
    config = load_config(REPO_PARAMS, overrides=path_overrides(tmp_path))
    write_prepared_split(config.prepare.dir, "test", images, labels, sha256)
    return Project(tmp_path, config, bundles)
