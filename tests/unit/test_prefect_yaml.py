"""prefect.yaml (for a real server) and the deployments `flows serve` builds must agree."""

import yaml

from tests.helpers import REPO_PARAMS, REPO_ROOT
from visionloop.config import load_config

PREFECT_YAML = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())


def deployment(name: str) -> dict:
    return next(d for d in PREFECT_YAML["deployments"] if d["name"] == name)


def test_the_same_four_deployments_with_the_schedule_from_params():
    config = load_config(REPO_PARAMS)
    flows = config.flows
    assert [d["name"] for d in PREFECT_YAML["deployments"]] == [
        "nightly",
        "on-drop",
        "watcher",
        "prediction-log",
    ]
    assert deployment("nightly")["schedules"] == [
        {"cron": flows.retrain_cron, "timezone": flows.timezone}
    ]
    assert deployment("prediction-log")["schedules"] == [
        {"cron": flows.monitor_cron, "timezone": flows.timezone}
    ]
    # the watcher is one long-lived run that polls, started by `stack up`: no schedule
    watcher = deployment("watcher")
    assert "schedules" not in watcher and watcher["tags"] == ["always-on"]
    assert watcher["parameters"]["poll_seconds"] == flows.watch_interval_seconds
    assert {d["work_pool"]["name"] for d in PREFECT_YAML["deployments"]} == {config.stack.work_pool}


def test_entrypoints_exist_and_retraining_runs_one_at_a_time():
    for item in PREFECT_YAML["deployments"]:
        path, _, function = item["entrypoint"].partition(":")
        assert f"def {function}(" in (REPO_ROOT / path).read_text()
    for name in ("nightly", "on-drop"):
        assert deployment(name)["concurrency_limit"] == {
            "limit": 1,
            "collision_strategy": "ENQUEUE",
        }
    assert deployment("on-drop")["triggers"][0]["expect"] == ["visionloop.drop.complete"]
