"""The evaluate stage on a real trained model, logged to a real MLflow store."""

from __future__ import annotations

import csv
import json

import mlflow
import numpy as np
import pytest

from visionloop.artifacts.bundle import bundle_digest
from visionloop.artifacts.prepared import open_prepared_split
from visionloop.models.classifier import load_bundle
from visionloop.pipeline.stages import run_stage
from visionloop.tracking import configure_tracking

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def start_training_run(config) -> str:
    """What the train stage leaves behind: an MLflow run and train.dir/run.json naming it."""
    experiment_id = configure_tracking(config)
    with mlflow.start_run(experiment_id=experiment_id, run_name="train") as run:
        mlflow.log_param("arch", "simple_cnn")
    (config.train.dir / "run.json").write_text(json.dumps({"run_id": run.info.run_id}))
    return run.info.run_id


def test_evaluate_writes_metrics_tables_plots_and_logs_to_the_training_run(project):
    config = project.config
    project.use_candidate("good")
    run_id = start_training_run(config)

    summary = run_stage("evaluate", config)

    out = config.evaluate.dir
    metrics = json.loads((out / "metrics.json").read_text())
    test = open_prepared_split(config.prepare.dir, "test")
    predicted = load_bundle(project.bundles["good"]).predict_proba(test.images).argmax(1)
    assert metrics["top1"] == float(np.mean(predicted == test.labels)) > 0.9
    assert metrics["top1"] <= metrics["top5"] <= 1 and metrics["n_test"] == len(test)
    assert 0 <= metrics["ece"] <= 1 and metrics["log_loss"] > 0
    assert {"precision_macro", "recall_weighted", "f1_macro", "f1_weighted"} <= set(metrics)

    per_class = json.loads((out / "per_class.json").read_text())
    assert [row["class"] for row in per_class] == [str(d) for d in range(10)]
    assert sum(row["support"] for row in per_class) == len(test)
    confusion = json.loads((out / "confusion.json").read_text())
    matrix = np.array(confusion["matrix"])
    assert matrix.sum() == len(test) and np.trace(matrix) == np.sum(predicted == test.labels)
    for pair in confusion["most_confused"]:
        true, pred = int(pair["true"]), int(pair["predicted"])
        assert true != pred and matrix[true, pred] == pair["count"] > 0
    reliability = json.loads((out / "reliability.json").read_text())
    assert sum(row["count"] for row in reliability) == len(test)
    with (out / "predictions.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [r["sha256"] for r in rows] == list(test.sha256)
    assert [r["predicted"] for r in rows] == [str(p) for p in predicted]
    for plot in ("confusion_matrix.png", "reliability.png", "gradcam_errors.png"):
        assert (out / "plots" / plot).read_bytes().startswith(PNG_MAGIC)
    page = (out / "report.html").read_text()  # one page, plots inside it (docs/promotion.md)
    assert f"{metrics['top1']:.4f}" in page and f"{metrics['ece']:.4f}" in page
    assert page.count('src="data:image/png;base64,') == 3 and "https://" not in page  # + Grad-CAM

    assert summary["mlflow_run_id"] == run_id
    logged = mlflow.get_run(run_id)
    assert logged.data.metrics["test_top1"] == metrics["top1"]
    assert logged.data.params["arch"] == "simple_cnn"  # the training run itself, not a new one
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "evaluation")}
    assert "evaluation/metrics.json" in artifacts and "evaluation/plots" in artifacts
    assert "evaluation/report.html" in artifacts
    plots = {a.path for a in mlflow.MlflowClient().list_artifacts(run_id, "evaluation/plots")}
    assert "evaluation/plots/gradcam_errors.png" in plots  # the errors explained (Grad-CAM)

    # Registering this candidate attaches these metrics and the training run to the version.
    from visionloop.promotion.registry import register_candidate

    version = register_candidate(config)
    registered = mlflow.MlflowClient().get_model_version(config.registry.model_name, version)
    assert registered.run_id == run_id
    assert float(registered.tags["metric.top1"]) == pytest.approx(metrics["top1"], abs=1e-6)
    assert registered.tags["gate"] == "pending"


def test_evaluate_without_a_training_run_logs_to_a_new_run(project):
    project.use_candidate("weak")
    summary = run_stage("evaluate", project.config)
    run = mlflow.get_run(summary["mlflow_run_id"])
    assert run.info.run_name == "evaluate"
    assert run.data.metrics["test_top1"] == summary["metrics"]["top1"]
    evaluated = json.loads((project.config.evaluate.dir / "candidate.json").read_text())
    assert evaluated["mlflow_run_id"] == run.info.run_id

    # A newer candidate is never tagged with the metrics of the last one evaluated.
    from visionloop.artifacts.evaluation import evaluation_of
    from visionloop.promotion.registry import registration_tags

    project.use_candidate("good")
    digest = bundle_digest(project.config.train.dir / "model")
    assert evaluated["bundle_sha256"] != digest
    evaluated = evaluation_of(project.config.evaluate.dir, digest)
    tags = registration_tags(project.config, digest, evaluated)
    assert not any(k.startswith("metric.") for k in tags)


def test_gate_stage_registers_and_promotes_only_when_params_say_so(project):
    from visionloop.promotion.registry import list_versions

    project.use_candidate("weak")
    assert "registry" not in run_stage("gate", project.config)
    assert list_versions(project.config) == []  # dvc repro alone never touches the registry

    acting = project.with_overrides(registry={"act_in_pipeline": True})
    result = run_stage("gate", acting)
    assert result["passed"] and result["registry"]["action"] == "promoted"
    assert [row["aliases"] for row in list_versions(acting)] == [["challenger", "champion"]]
