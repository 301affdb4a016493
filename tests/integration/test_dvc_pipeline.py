"""`dvc repro` on split -> prepare in a real temporary git + DVC repository."""

from __future__ import annotations

import re
import shutil

import numpy as np
import yaml

from tests.helpers import REPO_ROOT, run_cli
from tests.project import Repo, make_repo
from visionloop.artifacts.prepared import open_prepared_split
from visionloop.artifacts.validation_report import read_runs
from visionloop.pipeline.stages import STAGES


def test_repro_runs_end_to_end_then_skips_then_reruns_only_what_changed(tmp_path):
    repo = make_repo(tmp_path)
    out = repo.run("dvc", "repro", "prepare")
    assert "Running stage 'split'" in out and "Running stage 'prepare'" in out
    first = repo.splits()
    assert len(first) == 24 and set(first.values()) <= {"train", "val", "test"}
    assert len(open_prepared_split(repo.path / "data" / "prepared", "train")) > 0
    repo.commit("repro")
    lock = (repo.path / "dvc.lock").read_text()

    again = repo.run("dvc", "repro", "prepare")
    assert "Running stage" not in again and "Data and pipelines are up to date" in again
    assert (repo.path / "dvc.lock").read_text() == lock

    repo.add_drop("drop-2", range(100, 110))
    out = repo.run("dvc", "repro", "prepare")
    assert "Running stage 'split'" in out and "Running stage 'prepare'" in out
    assert '"decoded": 10' in out and '"from_cache": 24' in out
    second = repo.splits()
    assert len(second) == 34 and all(second[sha] == split for sha, split in first.items())
    # DVC deleted validate's outs before rerunning it; the report's history is not one of them
    history = read_runs(repo.path / "reports" / "validation")
    assert [run["images"] for run in history] == [34, 24]
    assert "reports/validation/runs" not in repo.run("git", "status", "--porcelain")
    repo.commit("repro drop-2")

    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["prepare"]["image_size"] = 20
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = repo.run("dvc", "repro", "prepare")
    assert "Stage 'split' didn't change" in out and "Running stage 'prepare'" in out

    metrics = repo.run_json("dvc", "metrics", "show", "--json")
    audit = next(iter(metrics.values()))["data"]["data/splits/summary.json"]["data"]
    assert audit["cross_split_near_duplicate_pairs"] == 0 and audit["images"] == 34
    assert audit["train_images"] + audit["val_images"] + audit["test_images"] == 34
    plots = repo.run_json("dvc", "plots", "show", "--json")
    # the training plots do not exist yet: only the data half was reproduced
    data_errors = [e for e in plots.get("errors", []) if e.get("source", "").startswith("data/")]
    assert data_errors == [] and "data/splits/class_counts.csv" in plots["data"]


def test_exp_run_with_a_changed_split_param_makes_a_new_split(tmp_path):
    repo = make_repo(tmp_path)
    repo.run("dvc", "repro", "prepare")
    repo.commit("repro")
    before = repo.splits()
    repo.run("dvc", "exp", "run", "-S", "split.seed=7", "prepare")
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    assert params["split"]["seed"] == 7
    assert set(repo.splits()) == set(before) and repo.splits() != before
    shown = repo.run_json("dvc", "exp", "show", "--json")
    experiments = [
        rev["data"]
        for commit in shown
        for experiment in commit.get("experiments") or []
        for rev in experiment["revs"]
    ]
    assert [e["params"]["params.yaml"]["data"]["split"]["seed"] for e in experiments] == [7]
    assert experiments[0]["metrics"]["data/splits/summary.json"]["data"]["images"] == 24


def test_push_then_pull_into_a_fresh_clone_restores_data_and_outputs(tmp_path):
    repo = make_repo(tmp_path)
    repo.run("dvc", "repro")
    repo.commit("repro")
    repo.run("dvc", "push")
    # `dvc metrics show`: a handful of flat scalars per stage, whatever the number of classes
    metrics = next(iter(repo.run_json("dvc", "metrics", "show", "--json").values()))["data"]
    shown = {path: entry["data"] for path, entry in metrics.items()}
    assert len(shown) == 5 and all(len(values) <= 15 for values in shown.values()), shown
    assert all(
        isinstance(value, int | float | str | bool | None)
        for values in shown.values()
        for value in values.values()
    ), shown

    clone = Repo(tmp_path / "clone")
    repo.run("git", "clone", "-q", str(repo.path), str(clone.path))
    clone.run("dvc", "pull")
    restored_files = (
        "data/raw/manifest.csv",
        "data/splits/split.csv",
        "data/prepared/stats.json",
        "models/candidate/model/weights.pt",
    )
    for relative in restored_files:
        assert (clone.path / relative).read_bytes() == (repo.path / relative).read_bytes()
    original = open_prepared_split(repo.path / "data" / "prepared", "train")
    restored = open_prepared_split(clone.path / "data" / "prepared", "train")
    assert np.array_equal(original.images, restored.images)
    # only the gate, which reads the registry that DVC cannot see, is always out of date
    status = clone.run("dvc", "status")
    assert re.findall(r"^(\w+):", status, flags=re.M) == ["gate"] and "always changed" in status
    assert re.findall(r"Running stage '(\w+)'", clone.run("dvc", "repro")) == ["gate"]


def test_a_stage_without_ingested_data_fails_with_one_line(tmp_path):
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    result = run_cli("--params", str(tmp_path / "params.yaml"), "stage", "split")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines() == [
        f"Error: {tmp_path}/data/raw/manifest.csv: no manifest; "
        "ingest a drop first (visionloop data ingest)"
    ]


def test_fresh_project_demo_ingest_repro_then_a_later_drop(tmp_path):
    """The real flow: `visionloop data demo`, `data ingest`, `dvc repro`, one drop at a time."""
    repo = make_repo(tmp_path, seeds=None)
    repo.run("visionloop", "data", "demo")
    repo.run("visionloop", "data", "ingest", "digits-001")
    repo.commit("ingest digits-001")
    out = repo.run("dvc", "repro")
    assert all(f"Running stage '{name}'" in out for name in STAGES)
    first = repo.splits()
    assert len(first) == 1438
    repo.commit("repro")

    again = repo.run("dvc", "repro")
    # only the gate reruns: it reads the registry, which DVC cannot see (always_changed)
    assert re.findall(r"Running stage '(\w+)'", again) == ["gate"]

    repo.run("visionloop", "data", "ingest", "digits-002")
    out = repo.run("dvc", "repro")
    assert "Running stage 'split'" in out and '"new": 179' in out
    second = repo.splits()
    assert len(second) == 1617 and all(second[sha] == split for sha, split in first.items())
    placed = sum(split != "excluded" for sha, split in second.items() if sha not in first)
    assert f'"decoded": {placed},' in out
