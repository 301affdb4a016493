"""The demo drops through the real CLI in a temporary git + DVC repository."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from tests.helpers import REPO_PARAMS, REPO_ROOT, run_cli
from visionloop.data.ingest.commit import KILL_ENV

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="needs git")


def _sh(*args: str, cwd) -> str:
    env = {**os.environ, "PATH": f"{os.path.dirname(sys.executable)}:{os.environ['PATH']}"}
    done = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def _dvc_status(repo) -> str:
    return _sh(sys.executable, "-m", "dvc", "status", cwd=repo).strip()


@pytest.fixture
def repo(tmp_path):
    repo = tmp_path / "project"
    repo.mkdir()
    _sh("git", "init", "-q", cwd=repo)
    _sh("git", "config", "user.email", "t@example.com", cwd=repo)
    _sh("git", "config", "user.name", "t", cwd=repo)
    _sh(sys.executable, "-m", "dvc", "init", "-q", cwd=repo)
    _sh(sys.executable, "-m", "dvc", "config", "core.autostage", "true", cwd=repo)
    params = yaml.safe_load(REPO_PARAMS.read_text())
    params["data"]["validation"]["min_per_class"] = 10
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return repo


def test_demo_then_ingest_then_validate_leaves_dvc_status_clean(repo):
    assert run_cli("data", "demo", cwd=repo).returncode == 0
    result = run_cli("data", "ingest", "-q", cwd=repo)
    assert result.returncode == 0, result.stderr
    assert "digits-001: ingested" in result.stdout and "recorded with `dvc add`" in result.stdout
    assert _dvc_status(repo) == "Data and pipelines are up to date."
    staged = _sh("git", "diff", "--cached", "--name-only", cwd=repo).split()
    assert {"data/raw.dvc", "data/.gitignore", ".dvc/config"} <= set(staged)
    raw_dvc = yaml.safe_load((repo / "data" / "raw.dvc").read_text())
    # one shard per drop (digits-001..003) + manifest, classes, ledger: not one file per image
    assert raw_dvc["outs"][0]["nfiles"] == 3 + 3

    # the default remote is a folder beside the workspace, stored relative in .dvc/config
    assert "../../visionloop-dvc-remote" in (repo / ".dvc" / "config").read_text()
    _sh(sys.executable, "-m", "dvc", "push", "-q", cwd=repo)
    assert any((repo.parent / "visionloop-dvc-remote").rglob("*.dir"))

    validate = run_cli("stage", "validate", cwd=repo)
    assert validate.returncode == 0, validate.stderr
    summary = json.loads(validate.stdout)
    assert summary["success"] and summary["images"] == 1797 and summary["classes"] == 10
    report = repo / "reports" / "validation"
    assert "sha256_unique" in (report / "results.json").read_text()
    assert (report / "data_docs" / "index.html").is_file()
    assert not (repo / "gx").exists()  # GX ran in memory, no project folder left behind


def test_kill_before_dvc_add_then_rerun_leaves_dvc_status_clean(repo):
    """Killed after the commit but before `dvc add`: the next ingest records data/raw."""
    assert run_cli("data", "demo", cwd=repo).returncode == 0
    env = {**os.environ, KILL_ENV: "moved", "PYTHONPATH": str(REPO_ROOT / "src")}
    killed = subprocess.run(
        [sys.executable, "-m", "visionloop", "data", "ingest", "-q", "digits-002"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert killed.returncode == -signal.SIGKILL
    assert not (repo / "data" / "raw.dvc").exists()
    rerun = run_cli("data", "ingest", "-q", "digits-003", cwd=repo)
    assert rerun.returncode == 0, rerun.stderr
    assert _dvc_status(repo) == "Data and pipelines are up to date."
    ledger = json.loads((repo / "data" / "raw" / "drops.json").read_text())
    assert [d["name"] for d in ledger["drops"]] == ["digits-002", "digits-003"]


HOLD_DVC_LOCK = """
import sys, time
from dvc.lock import make_lock
lock = make_lock(sys.argv[1])
lock.lock()
print("held", flush=True)
time.sleep(float(sys.argv[2]))
lock.unlock()
"""


def test_ingest_waits_for_dvc_lock_held_by_another_process(repo):
    """Issue 15: `dvc add ... failed (Unable to acquire lock...)`, exit 1, no wait."""
    assert run_cli("data", "demo", cwd=repo).returncode == 0
    lock_file = repo / ".dvc" / "tmp" / "lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_DVC_LOCK, str(lock_file), "12"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        done = run_cli("data", "ingest", "-q", "digits-001", cwd=repo)  # DVC alone waits 3 s
    finally:
        holder.wait(timeout=60)
    assert done.returncode == 0, done.stderr
    assert _dvc_status(repo) == "Data and pipelines are up to date."
