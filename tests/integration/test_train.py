"""The train stage on a tiny real cache (the digits at 16 px): outputs, MLflow, resume, DDP."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from tests.digits import write_digits_cache
from tests.helpers import REPO_PARAMS, run_cli
from visionloop.artifacts.prepared import open_prepared_split
from visionloop.config import deep_merge, load_config
from visionloop.errors import VisionloopError
from visionloop.models.classifier import load_bundle
from visionloop.pipeline.stages import STAGES
from visionloop.training.engine import train

TINY = {
    "epochs": 3,
    "batch_size": 16,
    "log_model": False,
    "progress": "lines",
    "early_stopping": {"patience": 2},
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """10 images of each digit at 16 px: 60 train, 20 val, 20 test."""
    folder = tmp_path_factory.mktemp("digits")
    return write_digits_cache(folder, size=16, per_class=10, fractions=(0.6, 0.2, 0.2))


def write_params(folder: Path, cache: dict[str, Path], **train) -> Path:
    """The repo's params with every path inside `folder`, the cache's data and `train` on top."""
    raw = yaml.safe_load(REPO_PARAMS.read_text())
    overrides = {
        "data": {"raw_dir": str(cache["raw_dir"])},
        "prepare": {"dir": str(cache["prepared_dir"])},
        "registry": {
            "tracking_uri": f"sqlite:///{folder}/mlflow.db",
            "artifact_dir": str(folder / "artifacts"),
        },
        "train": {
            "dir": str(folder / "candidate"),
            "checkpoint_dir": str(folder / "checkpoints"),
            **deep_merge(TINY, train),
        },
    }
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(deep_merge(raw, overrides)))
    return path


def history(config) -> list[dict[str, float]]:
    with open(config.train.dir / "history.csv") as handle:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(handle)]


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch):
    """An MLFLOW_TRACKING_URI exported in the caller's shell would win over params."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


def cli_env() -> dict[str, str]:
    # One thread per process: the same arithmetic in every run, and no fight over 2 cores.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def test_the_stage_is_registered_with_its_params():
    assert STAGES["train"].params == ("data.raw_dir", "split.dir", "prepare.dir", "train")
    assert STAGES["train"].load().__module__ == "visionloop.training.engine"


def test_training_writes_a_bundle_metrics_history_and_one_mlflow_run(tmp_path, cache):
    import mlflow

    config = load_config(write_params(tmp_path, cache, epochs=6, log_model=True))
    summary = train(config)

    rows = history(config)
    assert [r["epoch"] for r in rows] == list(range(1, summary["epochs_run"] + 1))
    assert rows[-1]["train_loss"] < rows[0]["train_loss"]  # it learns
    metrics = json.loads((config.train.dir / "metrics.json").read_text())
    assert metrics["best_epoch"] == summary["best_epoch"]
    assert metrics["val_accuracy"] == max(r["val_accuracy"] for r in rows)

    classifier = load_bundle(config.train.dir / "model")
    val = open_prepared_split(config.prepare.dir, "val")
    probs = classifier.predict_proba(np.array(val.images))
    assert probs.shape == (20, 10)
    assert np.isclose((probs.argmax(1) == val.labels).mean(), metrics["val_accuracy"])
    assert classifier.meta.classes == tuple(str(c) for c in range(10))
    assert classifier.meta.image_size == 16

    run_id = json.loads((config.train.dir / "run.json").read_text())["run_id"]
    assert run_id == summary["run_id"]
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    run = mlflow.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["train.model"] == "simple_cnn" and run.data.params["image_size"] == "16"
    client = mlflow.MlflowClient()
    losses = client.get_metric_history(run_id, "val_loss")
    assert [m.step for m in losses] == list(range(1, summary["epochs_run"] + 1))
    assert {"train_accuracy", "lr", "images_per_s", "epoch_time_s"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert {"bundle", "classes.json", "training_curves.png"} <= artifacts
    model = mlflow.pytorch.load_model(f"runs:/{run_id}/model")
    example = classifier.to_input(np.array(val.images[:2]))
    assert np.allclose(model(example).detach().numpy(), classifier.module(example).detach().numpy())


def test_train_help_stays_light_and_bad_early_stopping_params_are_one_line(tmp_path, cache):
    code = (
        "import sys\n"
        "from visionloop.cli import cli\n"
        "try:\n"
        "    cli.main(['train', '--help'], prog_name='visionloop')\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(sorted(m for m in ('torch', 'mlflow', 'prefect') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "--resume" in out.stdout and out.stdout.strip().splitlines()[-1] == "[]"
    params = write_params(tmp_path, cache, early_stopping={"monitor": "val_loss", "mode": "max"})
    result = run_cli("--params", str(params), "train")
    assert result.returncode == 2
    assert "train.early_stopping: Value error, val_loss improves when it goes min" in result.stderr


def test_an_empty_val_split_is_a_clear_error(tmp_path):
    empty_val = write_digits_cache(tmp_path / "digits", size=16, per_class=2, fractions=(1, 0, 0))
    with pytest.raises(VisionloopError, match="prepared val split is empty"):
        train(load_config(write_params(tmp_path, empty_val)))


def test_resume_refuses_when_there_is_no_checkpoint(tmp_path, cache):
    result = run_cli("--params", str(write_params(tmp_path, cache)), "train", "--resume")
    assert result.returncode == 1
    assert "no usable checkpoint to resume from" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_corrupt_latest_checkpoint_falls_back_and_training_continues(tmp_path, cache, caplog):
    config = load_config(write_params(tmp_path, cache, epochs=2, early_stopping={"patience": 9}))
    train(config)
    latest = config.train.checkpoint_dir / "epoch-0002.pt"
    latest.write_bytes(latest.read_bytes()[:-100])  # truncated, as by a full disk
    more = load_config(write_params(tmp_path, cache, epochs=3, early_stopping={"patience": 9}))
    summary = train(more, resume="always")
    assert "epoch-0002.pt: sha256 does not match" in caplog.text
    assert summary["resumed_from_epoch"] == 1 and summary["epochs_run"] == 3
    assert [r["epoch"] for r in history(more)] == [1, 2, 3]


def test_sigkill_mid_training_then_rerun_ends_like_an_uninterrupted_run(tmp_path, cache):
    """Patience 2 on a tiny set stops early; the killed-and-resumed run must stop at the same
    epoch with the same best epoch and the same numbers, in the same MLflow run."""
    slow = {"epochs": 30, "batch_size": 2, "early_stopping": {"patience": 2}}
    reference = write_params(tmp_path / "reference", cache, **slow)
    done = run_cli("--params", str(reference), "train", env=cli_env())
    assert done.returncode == 0, done.stderr
    expected = json.loads(done.stdout)
    assert expected["stopped_early"] and expected["epochs_run"] > 3

    params = write_params(tmp_path / "killed", cache, **slow)
    checkpoints = tmp_path / "killed" / "checkpoints"
    process = subprocess.Popen(
        [sys.executable, "-m", "visionloop", "--params", str(params), "stage", "train"],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 300
    while not (checkpoints / "epoch-0002.pt.sha256").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no second checkpoint"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (tmp_path / "killed" / "candidate" / "metrics.json").exists()
    first_run = json.loads((tmp_path / "killed" / "candidate" / "run.json").read_text())["run_id"]

    rerun = run_cli("--params", str(params), "stage", "train", env=cli_env())  # as DVC reruns
    assert rerun.returncode == 0, rerun.stderr
    resumed = json.loads(rerun.stdout)
    assert resumed["resumed_from_epoch"] >= 2 and resumed["run_id"] == first_run
    for key in ("epochs_run", "best_epoch", "stopped_early"):
        assert resumed[key] == expected[key], key
    for key in ("val_accuracy", "val_loss", "train_loss"):
        assert resumed[key] == pytest.approx(expected[key], rel=1e-6), key


def test_two_process_ddp_on_cpu_with_gloo(tmp_path, cache):
    import mlflow

    params = write_params(tmp_path, cache, epochs=2)
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent))
    command = ["--standalone", "--nproc-per-node=2", "-m", "visionloop", "--params", str(params)]
    result = subprocess.run(
        [torchrun, *command, "train"],
        env=cli_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout)  # printed once, by rank 0
    assert summary["epochs_run"] == 2
    assert result.stderr.count("epoch 2/2") == 1  # rank 0 alone reports progress
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    assert mlflow.get_run(summary["run_id"]).data.params["world_size"] == "2"
    assert load_bundle(tmp_path / "candidate" / "model").predict_proba(
        np.zeros((1, 16, 16, 3), dtype=np.uint8)
    ).shape == (1, 10)
