import os
from pathlib import Path

from tests.helpers import REPO_PARAMS
from visionloop.config import load_config
from visionloop.tracking import configure_tracking, tracking_uri


def shrunk_config(tmp_path):
    """The repo's params with the MLflow store moved into tmp_path."""
    return load_config(
        REPO_PARAMS,
        overrides={
            "registry": {
                "tracking_uri": f"sqlite:///{tmp_path}/mlflow.db",
                "artifact_dir": str(tmp_path / "artifacts"),
            }
        },
    )


def test_relative_sqlite_uri_is_resolved_against_the_params_folder(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = load_config(REPO_PARAMS)
    assert tracking_uri(config) == f"sqlite:///{REPO_PARAMS.parent}/mlruns/mlflow.db"


def test_environment_uri_wins(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri(load_config(REPO_PARAMS)) == "http://127.0.0.1:5000"


def test_runs_log_into_the_configured_store_and_artifact_folder(tmp_path, monkeypatch):
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)  # a stray ./mlruns would appear here
    config = shrunk_config(tmp_path)
    experiment_id = configure_tracking(config)
    assert configure_tracking(config) == experiment_id  # idempotent
    with mlflow.start_run(experiment_id=experiment_id) as run:
        mlflow.log_text("hello", "note.txt")
    artifact = mlflow.artifacts.download_artifacts(f"runs:/{run.info.run_id}/note.txt")
    assert Path(artifact).read_text() == "hello"
    assert (tmp_path / "mlflow.db").exists()
    assert list((tmp_path / "artifacts" / "visionloop").rglob("note.txt"))
    assert not (tmp_path / "mlruns").exists()


def test_configuring_one_store_does_not_capture_the_next(tmp_path, monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI; read back as the user's override,
    it would send every later project's runs into the first store."""
    import mlflow

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    first, second = shrunk_config(tmp_path / "a"), shrunk_config(tmp_path / "b")
    configure_tracking(first)
    assert "MLFLOW_TRACKING_URI" not in os.environ
    configure_tracking(second)
    assert mlflow.get_tracking_uri() == f"sqlite:///{tmp_path}/b/mlflow.db"
