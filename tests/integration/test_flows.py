"""The Prefect flows on a real project: real Prefect (test harness), MLflow, DVC, GX.

One project (git + DVC in a temporary folder) is trained once on the first demo drop; each
test then asserts what changed relative to the state it found, so the order does not matter.
"""

from __future__ import annotations

import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT
from tests.project import Repo, make_repo
from visionloop.config import load_config
from visionloop.data.demo import write_demo_drops
from visionloop.errors import VisionloopError
from visionloop.pipeline import reports
from visionloop.promotion.registry import list_versions


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=None):
        yield


@pytest.fixture(scope="module")
def project(tmp_path_factory, harness) -> Repo:
    """A project whose champion was trained by `retrain` on the first demo drop."""
    repo = make_repo(tmp_path_factory.mktemp("flows"), seeds=None)
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    # 2 epochs, but a real model: floors it clears instead of the first-model baselines
    params["gate"].update(min_top1=0.5, min_class_recall=0.0, first_model_baselines=[])
    params["flows"].update(settle_seconds=0, push_after_retrain=True)
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo.run("visionloop", "data", "demo", "--out", str(repo.path / "held"))
    repo.commit("project")
    state = retrain_now(repo, "digits-001")
    assert state.is_completed(), state.message
    return repo


def retrain_now(repo: Repo, *drops: str, **kwargs):
    """Move held demo drops into the incoming folder, then run the retrain flow once."""
    from flows.retrain import retrain

    for drop in drops:
        shutil.move(repo.path / "held" / drop, repo.path / "data" / "incoming" / drop)
    return retrain(params=str(repo.path / "params.yaml"), return_state=True, **kwargs)


def versions(repo: Repo) -> list[dict]:
    return list_versions(load_config(repo.path / "params.yaml"))


def champion(repo: Repo) -> str | None:
    return next((v["version"] for v in versions(repo) if "champion" in v["aliases"]), None)


def latest_artifact(key: str) -> str:
    from prefect.artifacts import Artifact

    artifact = Artifact.get(key)
    assert artifact is not None, f"no artifact {key!r}"
    return artifact.data


def test_first_drop_made_a_champion_and_dvc_is_clean(project):
    assert [v["gate"] for v in versions(project)] == ["passed"]
    assert champion(project) == "1"
    # only the gate, which reads the registry, is always out of date for DVC
    status = project.run("dvc", "status")
    assert re.findall(r"^(\w+):", status, flags=re.M) == ["gate"], status
    assert "always changed" in status
    pushed = Path(project.path.parent / "visionloop-dvc-remote")
    assert pushed.is_dir() and any(pushed.rglob("*"))
    report = latest_artifact("pipeline-report")
    assert "| train | ran |" in report and "MLflow run" in report and "top1" in report
    assert re.search(r"^\| train \| ran \| [\d.]+ \| [\d.]+ \|$", report, flags=re.M), report


def test_a_later_drop_registers_a_new_version_with_a_verdict(project):
    from flows.demo import task_seconds

    before = versions(project)
    state = retrain_now(project, "digits-002")
    assert state.is_completed(), state.message
    after = versions(project)
    assert len(after) == len(before) + 1
    new = after[-1]
    assert new["gate"] in ("passed", "failed") and new["summary"]
    assert champion(project) == (new["version"] if new["gate"] == "passed" else champion(project))
    assert "digits-002" in latest_artifact("intake")
    # what `python -m flows run` prints: drops, validation, test metrics, gate, registry
    block = "\n".join(
        reports.summary_block(load_config(project.path / "params.yaml"), state.result())
    )
    assert re.search(r"digits-002: ingested as drop \w+: files in \d+ = accepted", block), block
    assert "validation: passed" in block and re.search(r"test: top-1 0\.\d{4}, macro-F1", block)
    assert re.search(r"^gate: (passed|failed): ", block, flags=re.M) and "registry: " in block
    assert re.search(r"^  (pass|FAIL)  ", block, flags=re.M), block  # one line per gate rule
    assert "reports/validation/index.html" in block and "reports/evaluate/report.html" in block
    # the time of each part, as `flows demo` and bench/stack.py split it: Prefect's task runs
    summary = state.result()
    assert summary["dvc_seconds"] > 0 and summary["stage_seconds"] > 0
    tasks = task_seconds(state.state_details.flow_run_id)
    assert {"ingest_with_checks", "reproduce_stage", "register_and_promote", "push"} <= set(tasks)
    assert tasks["reproduce_stage"] >= summary["stage_seconds"] + summary["dvc_seconds"]
    # the flow lent the library's logger to Prefect only while it ran
    assert logging.getLogger("visionloop").handlers == []


def test_a_bad_drop_fails_the_run_with_its_reason_and_leaves_the_champion(project):
    before, held_champion = versions(project), champion(project)
    bad = project.path / "data" / "incoming" / "evil.tar"
    bad.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(bad, "w") as tar:
        tar.addfile(tarfile.TarInfo("../../escape.png"), io.BytesIO(b""))
    state = retrain_now(project)
    assert state.is_failed()
    assert "evil" in state.message and "rejected" in state.message
    assert versions(project) == before and champion(project) == held_champion
    assert "rejected" in latest_artifact("intake")


def test_two_concurrent_triggers_make_one_version(project):
    before = len(versions(project))
    shutil.move(project.path / "held" / "digits-003", project.path / "data" / "incoming")
    states = []

    def trigger():
        states.append(retrain_now(project))

    threads = [threading.Thread(target=trigger) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    assert len(states) == 2 and all(s.is_completed() or s.is_cancelled() for s in states)
    assert len(versions(project)) == before + 1
    skipped = [s for s in states if s.is_cancelled()]
    assert all("another retraining is running" in s.message for s in skipped)


def test_deployments_carry_the_schedule_trigger_and_one_at_a_time(project):
    from prefect.client.orchestration import get_client

    from flows.deployments import build_deployments

    config = load_config(project.path / "params.yaml")
    deployments = build_deployments(config, project.path / "params.yaml")
    ids = {d.name: d.apply() for d in deployments}
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment(ids["nightly"])
        on_drop = client.read_deployment(ids["on-drop"])
        watcher = client.read_deployment(ids["watcher"])
        triggers = client.read_resource_related_automations(f"prefect.deployment.{on_drop.id}")
    assert [s.schedule.cron for s in nightly.schedules] == [config.flows.retrain_cron]
    assert nightly.parameters == {"params": str((project.path / "params.yaml").resolve())}
    for deployment in (nightly, on_drop):
        assert deployment.concurrency_options.collision_strategy.value == "ENQUEUE"
    assert [a.trigger.expect for a in triggers] == [{"visionloop.drop.complete"}]
    # the watcher is one long-lived run that polls, not a scheduled run per look
    assert watcher.schedules == [] and watcher.tags == ["always-on"]
    assert watcher.parameters["poll_seconds"] == config.flows.watch_interval_seconds


def test_the_watcher_announces_each_complete_drop_once(tmp_path, harness):
    from flows.retrain import watch_drops

    repo = make_repo(tmp_path, seeds=None)
    params = repo.path / "params.yaml"
    (repo.path / "data" / "incoming" / "d1" / "cat").mkdir(parents=True)
    (repo.path / "data" / "incoming" / "d1" / "READY").write_text("")
    (repo.path / "data" / "incoming" / "d2.zip.part").write_bytes(b"PK")
    assert watch_drops(params=str(params)) == ["d1"]
    assert watch_drops(params=str(params)) == []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize(
    "stop",
    [
        pytest.param("ctrl-c", id="ctrl-c"),  # SIGINT to the terminal's whole process group
        pytest.param("sigterm", id="sigterm", marks=pytest.mark.slow),  # a service manager
    ],
)
def test_serve_runs_one_watcher_and_one_signal_stops_it_quickly_and_quietly(tmp_path, stop):
    repo = make_repo(tmp_path, seeds=None)
    port = free_port()
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    params["flows"].update(server_port=port, watch_interval_seconds=1)
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in repo.env.items() if not k.startswith("PREFECT_API")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "src"), str(REPO_ROOT)])
    env["PREFECT_HOME"] = str(repo.path / ".prefect")  # its own server database, per test
    # The runner's loop sleeps between polls: a signal it noticed only on its next wake-up
    # (Ctrl-C did, up to the default 10 s poll later) now fails the test every time.
    env["PREFECT_RUNNER_POLL_FREQUENCY"] = "60"
    serve = subprocess.Popen(
        [sys.executable, "-m", "flows", "serve"],
        cwd=repo.path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal gives a command
    )
    api = f"http://127.0.0.1:{port}/api"
    try:
        # all four served before the signal (one still being registered slowed the stop)
        names = wait_for(api, "/deployments/filter", lambda found: len(found) >= 4, 180)
        assert sorted(d["name"] for d in names) == [
            "nightly",
            "on-drop",
            "prediction-log",
            "watcher",
        ]
        running = wait_for(api, "/flow_runs/filter", has_running_run, 120, WATCHER_RUNS)
        time.sleep(3)  # the watcher has looked a few times by now: still one run
        assert [r["state_type"] for r in post(api, "/flow_runs/filter", WATCHER_RUNS)] == [
            "RUNNING"
        ]
        assert running[0]["id"] == post(api, "/flow_runs/filter", WATCHER_RUNS)[0]["id"]
    finally:
        stopped_at = time.monotonic()
        if stop == "ctrl-c":
            os.killpg(serve.pid, signal.SIGINT)
        else:
            serve.send_signal(signal.SIGTERM)
        try:
            output = serve.communicate(timeout=10)[0]
        except subprocess.TimeoutExpired:
            os.killpg(serve.pid, signal.SIGKILL)
            output = serve.communicate()[0]
            raise AssertionError(f"serve still running 10 s after {stop}:\n{output}") from None
    assert time.monotonic() - stopped_at < 10
    assert serve.returncode == 0, output
    assert "Traceback" not in output, output
    assert f"started a local prefect server: {api}" in output
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


WATCHER_RUNS = {"flows": {"name": {"any_": ["watch-drops"]}}}


def has_running_run(runs: list[dict]) -> bool:
    return any(run["state_type"] == "RUNNING" for run in runs)


def post(api_url: str, path: str, query: dict | None = None) -> list[dict]:
    import json

    request = urllib.request.Request(
        f"{api_url}{path}",
        data=json.dumps(query or {}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def wait_for(api_url: str, path: str, done, timeout: float, query=None) -> list[dict]:
    deadline = time.monotonic() + timeout
    found: list[dict] = []
    while time.monotonic() < deadline:
        try:
            found = post(api_url, path, query)
            if done(found):
                return found
        except OSError:
            pass
        time.sleep(1)
    raise AssertionError(f"{path} before the timeout: {found}")


def test_notifications_become_automations_on_the_configured_block(tmp_path, harness):
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    from flows.notifications import ON_DRIFT, ON_FAILURE, ON_PROMOTION, ensure_notifications

    CustomWebhookNotificationBlock(
        name="ops", url="http://127.0.0.1:9/hook", json_data={"text": "{{body}}"}
    ).save("ops", overwrite=True)
    config = load_config(
        REPO_ROOT / "params.yaml", overrides={"flows": {"notify_block": "custom-webhook/ops"}}
    )
    ensure_notifications(config)
    created = ensure_notifications(config)  # serving again replaces, never doubles
    with get_client(sync_client=True) as client:
        by_name = {a.name: client.read_automations_by_name(a.name) for a in created}
    assert sorted(by_name) == sorted([ON_FAILURE, ON_PROMOTION, ON_DRIFT])
    assert all(len(found) == 1 for found in by_name.values())
    failure = by_name[ON_FAILURE][0]
    assert failure.trigger.expect == {"prefect.flow-run.Failed"}
    assert failure.actions[0].type == "send-notification"
    assert by_name[ON_PROMOTION][0].trigger.expect == {"visionloop.model.promoted"}
    drift = by_name[ON_DRIFT][0].trigger
    assert drift.expect == {"visionloop.drift.detected"}
    assert drift.match.model_dump() == {"visionloop.verdict": "alert"}

    missing = load_config(REPO_ROOT / "params.yaml", overrides={"flows": {"notify_block": "x/y"}})
    with pytest.raises(VisionloopError, match="no Prefect block 'x/y'"):
        ensure_notifications(missing)


def test_a_drop_held_for_its_labels_ends_the_run_before_training(project, tmp_path):
    """label_issues: hold; an inverted drop with a fifth of its labels moved: drift alert
    and suspected mislabels are in the intake report, the run fails, the champion stays."""
    from PIL import Image, ImageOps

    from flows.retrain import monitor

    params = yaml.safe_load((project.path / "params.yaml").read_text())
    params["data"]["ingest"]["label_issues"] = "hold"
    hold_params = project.path / "params-hold.yaml"
    hold_params.write_text(yaml.safe_dump(params, sort_keys=False))
    before, held_champion = versions(project), champion(project)
    # its own copy of the third demo drop: another test of this module takes the held one
    write_demo_drops(tmp_path, load_config(project.path / "params.yaml").data.demo)
    source = tmp_path / "digits-003"
    drop = project.path / "data" / "incoming" / "odd-003"
    files = sorted(source.rglob("*.png"))
    for index, path in enumerate(files):
        label = path.parent.name if index % 5 else str((int(path.parent.name) + 1) % 10)
        target = drop / label / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        ImageOps.invert(Image.open(path).convert("RGB")).save(target)
    (drop / "READY").write_text("")

    from flows.retrain import retrain

    state = retrain(params=str(hold_params), return_state=True)
    assert state.is_failed()
    assert "odd-003" in state.message and "accept-label-issues" in state.message
    assert versions(project) == before and champion(project) == held_champion
    intake = latest_artifact("intake")
    assert "drift: alert" in intake and "suspected mislabelled" in intake
    assert drop.is_dir()  # left for a person
    shutil.rmtree(drop)
    import mlflow

    from visionloop.promotion.registry import registry_client

    registry_client(load_config(hold_params))  # points MLflow at the project's store
    (logged,) = mlflow.search_runs(
        experiment_names=[params["registry"]["experiment"]],
        filter_string="tags.`monitoring.source` = 'drop odd-003'",
        output_format="list",
    )
    assert logged.data.tags["drift.verdict"] == "alert"
    assert logged.data.metrics["labels.suspects"] > 0

    report = monitor(params=str(hold_params))  # nothing served yet: skipped, with why
    assert report["verdict"] == "none" and "0 predictions" in report["drift"]["skipped"]
    assert "Skipped" in latest_artifact("prediction-log-drift")
