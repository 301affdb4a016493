"""`dvc repro` on split -> prepare in a real temporary git + DVC repository."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import yaml

from tests.helpers import REPO_ROOT, run_cli
from tests.rawdata import pattern_image, write_drop
from visionloop.prepared import open_prepared_split
from visionloop.splits import read_split
from visionloop.stages import STAGES

GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.com",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.com",
}


def pipeline_env() -> dict[str, str]:
    """The venv's bin on PATH (stage cmds call `visionloop`), this checkout's code first."""
    env = dict(os.environ, **GIT_IDENTITY, DVC_NO_ANALYTICS="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env["PYTHONPATH"] = str(REPO_ROOT / "src")
    return env


class Repo:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = pipeline_env()

    def call(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            args, cwd=self.path, env=self.env, capture_output=True, text=True, timeout=300
        )

    def run(self, *args: str) -> str:
        """Run a command that must succeed; return what it printed (stdout and stderr)."""
        result = self.call(*args)
        assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
        return result.stdout + result.stderr

    def run_json(self, *args: str):
        result = self.call(*args)
        assert result.returncode == 0, f"{args}:\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout)

    def add_drop(self, name: str, seeds: range) -> list[str]:
        """A generated drop, ingested by `visionloop data ingest` (which runs `dvc add`)."""
        drop = [(["ant", "bee"][seed % 2], pattern_image(seed)) for seed in seeds]
        shas = write_drop(self.path / "data" / "incoming" / name, drop)
        self.run("visionloop", "data", "ingest", "--allow-new-classes", name)
        self.commit(f"ingest {name}")
        return shas

    def commit(self, message: str) -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-qm", message)

    def splits(self) -> dict[str, str]:
        return {row.sha256: row.split for row in read_split(self.path / "data" / "splits")}


def make_repo(tmp_path: Path, seeds: range | None = range(24)) -> Repo:
    """A fresh project: its pipeline files, code and default remote; `seeds`: a first drop."""
    path = tmp_path / "project"
    path.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".gitignore"):
        shutil.copy(REPO_ROOT / name, path / name)
    shutil.copytree(
        REPO_ROOT / "src", path / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    params = yaml.safe_load((path / "params.yaml").read_text())
    params["prepare"]["image_size"] = 16
    params["train"].update(epochs=2, log_model=False)  # the pipeline, not the model, is tested
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo = Repo(path)
    repo.run("git", "init", "-q")
    repo.run("dvc", "init", "-q")
    # the project's default remote: a folder beside the workspace (tmp_path/visionloop-dvc-remote)
    shutil.copy(REPO_ROOT / ".dvc" / "config", path / ".dvc" / "config")
    if seeds is not None:
        repo.add_drop("drop-1", seeds)
    return repo


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
    repo.commit("repro drop-2")

    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["prepare"]["image_size"] = 20
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = repo.run("dvc", "repro", "prepare")
    assert "Stage 'split' didn't change" in out and "Running stage 'prepare'" in out

    metrics = repo.run_json("dvc", "metrics", "show", "--json")
    audit = next(iter(metrics.values()))["data"]["data/splits/audit.json"]["data"]
    assert audit["cross_split_near_duplicate_pairs"] == 0 and audit["images"] == 34
    plots = repo.run_json("dvc", "plots", "show", "--json")
    assert "errors" not in plots and "data/splits/class_counts.csv" in plots["data"]


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
    assert experiments[0]["metrics"]["data/splits/audit.json"]["data"]["images"] == 24


def test_push_then_pull_into_a_fresh_clone_restores_data_and_outputs(tmp_path):
    repo = make_repo(tmp_path)
    repo.run("dvc", "repro", "prepare")
    repo.commit("repro")
    repo.run("dvc", "push")

    clone = Repo(tmp_path / "clone")
    repo.run("git", "clone", "-q", str(repo.path), str(clone.path))
    clone.run("dvc", "pull")
    for relative in ("data/raw/manifest.csv", "data/splits/split.csv", "data/prepared/stats.json"):
        assert (clone.path / relative).read_bytes() == (repo.path / relative).read_bytes()
    original = open_prepared_split(repo.path / "data" / "prepared", "train")
    restored = open_prepared_split(clone.path / "data" / "prepared", "train")
    assert np.array_equal(original.images, restored.images)
    assert "Data and pipelines are up to date" in clone.run("dvc", "status")
    assert "Running stage" not in clone.run("dvc", "repro", "prepare")


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
