"""A real registry for the serving tests (MLflow on SQLite in tmp_path, real trained models).

Built once per session: v1 = the weak digits model, the champion; v2 = the good one, which
passed its gate against v1 and was then rolled back, so a test can promote it. Both were
registered as the project registers (gate, then register_and_promote), so both carry their
signature and ONNX/int8 exports, checked on the prepared test split and calibrated on the
train split. Tests that move aliases work on `registry_copy` (its own SQLite file).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_PARAMS
from tests.integration.gate.conftest import path_overrides
from tests.integration.gate.trained import TEST_SIZE, digits_rgb
from visionloop.artifacts.prepared import write_prepared_split
from visionloop.config import Config, deep_merge, load_config

# Small limits, so that every refusal is cheap to provoke; a short poll for the swap tests.
SERVING = {
    "poll_seconds": 0.3,
    "keep_images": True,
    "limits": {
        "max_request_bytes": 300_000,
        "max_images_per_request": 4,
        "max_pixels": 250_000,  # 500 x 500
    },
    "batching": {"max_batch": 64, "max_wait_ms": 50},
}


def overrides(root: Path, db_root: Path | None = None) -> dict:
    """The gate tests' paths under root (the MLflow database under db_root), serving's too."""
    db_root = db_root or root
    paths = path_overrides(root)
    paths["registry"].update(
        {"tracking_uri": f"sqlite:///{db_root}/mlflow.db", "dir": str(db_root / "registry")}
    )
    return deep_merge(
        paths,
        {
            "serving": {
                "export": {"onnx": True},  # the gate tests turn it off; here it is the subject
                **SERVING,
                "prediction_log": str(db_root / "serving" / "predictions"),
                "image_store": str(db_root / "serving" / "images"),
            }
        },
    )


@dataclass
class Registry:
    root: Path  # MLflow database, audit log, prediction log
    config: Config
    params: Path  # the same settings as a params.yaml, for the CLI and servers
    bundles: dict[str, Path]

    def use_candidate(self, name: str) -> None:
        target = self.config.train.dir / "model"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(self.bundles[name], target)


def write_params(path: Path, settings: dict) -> Path:
    path.write_text(yaml.safe_dump(deep_merge(yaml.safe_load(REPO_PARAMS.read_text()), settings)))
    return path


def write_splits(config: Config) -> None:
    images, labels = digits_rgb()
    hashes = [f"digit{i:04d}" for i in range(len(labels))]
    for name, part in (("test", slice(0, TEST_SIZE)), ("train", slice(TEST_SIZE, None))):
        write_prepared_split(config.prepare.dir, name, images[part], labels[part], hashes[part])


@pytest.fixture(scope="session")
def served_registry(tmp_path_factory, bundles) -> Registry:
    from visionloop.promotion.gate import run as gate
    from visionloop.promotion.registry import register_and_promote, rollback

    root = tmp_path_factory.mktemp("served-registry")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.chdir(root)  # a stray ./mlruns would land here
        settings = overrides(root)
        config = load_config(REPO_PARAMS, overrides=settings)
        write_splits(config)
        registry = Registry(root, config, write_params(root / "params.yaml", settings), bundles)
        for name in ("weak", "good"):
            registry.use_candidate(name)
            gate(config)
            outcome = register_and_promote(config)
            assert outcome["action"] == "promoted", outcome
        rollback(config, "so that a test can promote v2 again")
    return registry


@pytest.fixture
def registry_copy(served_registry, tmp_path) -> Registry:
    """The session registry in a database of its own: aliases can move freely here."""
    shutil.copy(served_registry.root / "mlflow.db", tmp_path / "mlflow.db")
    shutil.copytree(served_registry.root / "registry", tmp_path / "registry")
    # keep_images off here: the log is then written on the event loop (the default path).
    settings = deep_merge(
        overrides(served_registry.root, db_root=tmp_path), {"serving": {"keep_images": False}}
    )
    config = load_config(REPO_PARAMS, overrides=settings)
    params = write_params(tmp_path / "params.yaml", settings)
    return Registry(tmp_path, config, params, served_registry.bundles)
