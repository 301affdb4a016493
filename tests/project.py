"""A throwaway visionloop project for integration tests: git + DVC in tmp_path.

It holds the project's own pipeline files and code (dvc.yaml's deps name files under
src/), with params shrunk so that the pipeline, not the model, is what a test pays for.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO_ROOT
from tests.rawdata import pattern_image, write_drop
from visionloop.artifacts.split_table import read_split

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
    params["serving"]["export"]["onnx"] = False  # likewise (tests/integration/serving has them)
    (path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo = Repo(path)
    repo.run("git", "init", "-q")
    repo.run("dvc", "init", "-q")
    # the project's default remote: a folder beside the workspace (tmp_path/visionloop-dvc-remote)
    shutil.copy(REPO_ROOT / ".dvc" / "config", path / ".dvc" / "config")
    if seeds is not None:
        repo.add_drop("drop-1", seeds)
    return repo
