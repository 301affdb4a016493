"""`visionloop tune` on a tiny real cache (digits at 16 px): a 3-trial study with a pruned
trial, MLflow parent and child runs, the params.yaml patch, a killed study resumed, and
bad input as one line with exit code 2."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.digits import write_digits_cache
from tests.helpers import run_cli
from tests.integration.test_train import cli_env, write_params

# Two learning rates, one useless: with this seed TPE's random start draws the useless one
# for trials 0 and 2, and the median pruner (after 1 finished trial) stops trial 2.
SPACE = {"train.lr": {"choices": [0.003, 0.000001]}}
TUNE = {"startup_trials": 3, "prune_after_trials": 1, "prune_warmup_epochs": 0, "seed": 0}


@pytest.fixture(autouse=True)
def own_tracking_store(monkeypatch):
    """mlflow.set_tracking_uri exports MLFLOW_TRACKING_URI, which would win over params."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    return write_digits_cache(folder, size=16, per_class=10, fractions=(0.6, 0.2, 0.2))


def tune_params(folder: Path, cache, space=SPACE, **tune) -> Path:
    path = write_params(folder, cache, epochs=3, progress="off")
    raw = yaml.safe_load(path.read_text())
    raw["tune"] = {"dir": str(folder / "tune"), **TUNE, **tune, "space": space}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def tune_cli(params: Path, *args: str) -> subprocess.CompletedProcess:
    return run_cli("--params", str(params), "tune", *args, env=cli_env(), timeout=300)


def test_a_three_trial_study_prunes_one_logs_child_runs_and_applies_its_best_params(
    tmp_path, cache
):
    import mlflow

    params = tune_params(tmp_path, cache)
    before = yaml.safe_load(params.read_text())
    result = tune_cli(params, "--trials", "3", "--apply")
    assert result.returncode == 0, result.stderr
    assert "2 complete, 1 pruned, 0 failed; best trial 1: val_accuracy" in result.stdout
    assert "-  lr: 0.002" in result.stdout and "+  lr: 0.003" in result.stdout

    study = json.loads((tmp_path / "tune" / "study.json").read_text())
    states = [row["state"] for row in study["trial_table"]]
    assert states == ["complete", "complete", "pruned"]
    pruned = study["trial_table"][2]
    assert pruned["epochs"] < 3  # stopped before its last epoch
    best = study["trial_table"][study["best_trial"]]
    complete = [r["value"] for r in study["trial_table"] if r["state"] == "complete"]
    assert best["value"] == max(complete)

    # the patch changed exactly the tuned key, to the best trial's value
    after = yaml.safe_load(params.read_text())
    changed = {k for k, v in flat(after).items() if flat(before).get(k) != v}
    assert changed == {"train.lr"} and after["train"]["lr"] == best["params"]["train.lr"]
    assert yaml.safe_load((tmp_path / "tune" / "best_params.yaml").read_text()) == {
        "train": {"lr": best["params"]["train.lr"]}
    }

    mlflow.set_tracking_uri(f"sqlite:///{tmp_path}/mlflow.db")
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list")
    parents = [r for r in runs if r.info.run_name == "tune visionloop"]
    assert len(parents) == 1
    parent = parents[0]
    assert parent.data.tags["best_trial"] == str(study["best_trial"])
    children = sorted(
        (r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id),
        key=lambda r: r.info.run_name,
    )
    assert [r.info.run_name for r in children] == ["tune trial 0", "tune trial 1", "tune trial 2"]
    assert [r.data.tags["optuna.state"] for r in children] == ["complete", "complete", "pruned"]
    assert [r.info.status for r in children] == ["FINISHED", "FINISHED", "KILLED"]
    assert children[1].data.params["train.lr"] == "0.003"
    # the Dataset column: one input per split, named for the data, with its image count
    inputs = {
        next(t.value for t in i.tags if t.key == "mlflow.data.context"): i
        for i in children[0].inputs.dataset_inputs
    }
    assert set(inputs) == {"train", "val", "test"}
    images = {n: next(t.value for t in i.tags if t.key == "images") for n, i in inputs.items()}
    assert images == {"train": "60", "val": "20", "test": "20"}


def _trials(storage: Path) -> list:
    import optuna

    if not storage.exists():
        return []
    try:
        study = optuna.load_study(study_name="visionloop", storage=f"sqlite:///{storage}")
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


@pytest.mark.slow
def test_a_killed_study_resumes_where_it_stopped(tmp_path, cache):
    # trials long enough to be caught running: with 3 epochs an idle machine finished the
    # second trial between two looks, and the study ended before it could be killed
    params = tune_params(tmp_path, cache, prune_after_trials=10, epochs=12)
    storage = tmp_path / "optuna.db"
    process = subprocess.Popen(
        [sys.executable, "-m", "visionloop", "--params", str(params), "tune", "--trials", "3"],
        env=cli_env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:  # kill it in the middle of its second trial
            trials = _trials(storage)
            running = [t for t in trials if t.state.name == "RUNNING" and "worker" in t.user_attrs]
            if any(t.state.name == "COMPLETE" for t in trials) and running:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the study never reached its second trial")
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    killed = running[0]

    result = tune_cli(params, "--trials", "3")
    assert result.returncode == 0, result.stderr
    rows = json.loads((tmp_path / "tune" / "study.json").read_text())["trial_table"]
    by_number = {row["number"]: row for row in rows}
    assert by_number[killed.number]["state"] == "fail"
    retry = [row for row in rows if row["retry_of"] == killed.number]
    assert len(retry) == 1 and retry[0]["params"] == killed.params  # tried again first
    assert sum(row["state"] == "complete" for row in rows) == 3
    assert result.stdout.count("study visionloop") == 1


def test_bad_tune_input_is_one_line_with_exit_code_2(tmp_path, cache):
    cases = {
        "empty": ({}, "tune.space is empty"),
        "malformed": ({"train.lr": {"low": 0.1}}, "a range needs both low and high"),
        "low above high": ({"train.lr": {"low": 0.1, "high": 0.01}}, "must be below high"),
        "no such param": ({"train.speed": {"low": 0, "high": 1}}, "train.speed: no such param"),
        "not a mapping": ("lr", "tune.space: Input should be a valid dictionary"),
    }
    for name, (space, message) in cases.items():
        result = tune_cli(tune_params(tmp_path / name, cache, space=space), "--trials", "1")
        assert result.returncode == 2, (name, result.stderr)
        assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1, name
        assert "Traceback" not in result.stderr


def test_a_study_name_clash_is_refused_with_exit_code_2(tmp_path, cache):
    from visionloop.config import load_config
    from visionloop.experiments.storage import study_storage_url
    from visionloop.experiments.tune import open_study

    first = load_config(tune_params(tmp_path, cache))
    open_study(first, "visionloop", study_storage_url(first))  # a study over SPACE exists
    other = tune_params(tmp_path, cache, space={"train.weight_decay": {"low": 0.0, "high": 0.1}})
    result = tune_cli(other, "--trials", "1")
    assert result.returncode == 2, result.stderr
    assert "study 'visionloop' already exists" in result.stderr
    assert "with another search space" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
