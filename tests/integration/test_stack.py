"""`visionloop stack` on real servers: PostgreSQL 15, MLflow (basic auth, artifacts on S3),
Prefect (auth string), a process worker running prefect.yaml's deployments.

One stack is started for the module, on free loopback ports, with MLflow's artifacts and the
DVC remote on moto's S3 server; tests run in file order (the end-to-end run first, the
server killed mid-flow last) and share it. Nothing here mocks a server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO_ROOT
from tests.project import Repo, make_repo
from visionloop.stack import http, postgres
from visionloop.stack.layout import HOST, StackError

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not postgres.installed(),
        reason=f"PostgreSQL {postgres.MAJOR} binaries missing ({postgres.INSTALL_HINT})",
    ),
]

BUCKET = "visionloop-test"
IMAGES_PER_CLASS = {"digits-001": 20, "digits-002": 6}  # tiny drops: the stack is tested
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "CRASHED"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on loopback, with one bucket; the AWS_* environment that reaches it."""
    port = free_port()
    log = (tmp_path_factory.mktemp("moto") / "moto.log").open("wb")
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", HOST, "-p", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    env = {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": f"http://{HOST}:{port}",  # honoured by boto3, DVC and MLflow
    }
    assert http.wait_until(
        lambda: http.healthy(f"http://{HOST}:{port}/moto-api/"), 60, lambda: server.poll() is None
    )
    s3_client(env).create_bucket(Bucket=BUCKET)
    yield env
    server.terminate()
    server.wait(timeout=30)


def s3_client(env: dict[str, str]):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    )


def s3_keys(env: dict[str, str], prefix: str) -> list[str]:
    found = s3_client(env).list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in found.get("Contents", [])]


@dataclass
class Stack:
    repo: Repo
    env: dict[str, str]  # the project's environment pointed at the stack (`stack env`)
    config: dict  # params.yaml as written
    up_output: str

    def cli(self, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["visionloop", *args],
            cwd=self.repo.path,
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=600,
        )

    @property
    def prefect(self) -> str:
        return self.env["PREFECT_API_URL"]

    def api(self, path: str, payload=None, auth: str | None = None):
        auth = auth or self.env["PREFECT_API_AUTH_STRING"]
        return http.request(f"{self.prefect}{path}", payload, headers=http.basic_auth(auth))

    def deployment_id(self, flow: str, name: str) -> str:
        return self.api(f"/deployments/name/{flow}/{name}")["id"]

    def runs(self, deployment_id: str) -> list[dict]:
        query = {
            "flow_runs": {"deployment_id": {"any_": [deployment_id]}},
            "sort": "START_TIME_ASC",
        }
        return self.api("/flow_runs/filter", query)

    def logs(self, flow_run_id: str) -> str:
        """The run's log lines and its subflow's (train-pipeline), as the UI shows them."""
        children = self.api(
            "/flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [flow_run_id]}}}
        )
        ids = [flow_run_id, *(child["id"] for child in children)]
        query = {"logs": {"flow_run_id": {"any_": ids}}, "limit": 200, "sort": "TIMESTAMP_ASC"}
        return "\n".join(entry["message"] for entry in self.api("/logs/filter", query))

    def mlflow_db(self, sql: str) -> list[tuple]:
        secrets = json.loads((self.repo.path / ".visionloop/stack/secrets.json").read_text())
        port = self.config["stack"]["postgres_port"]
        with postgres.connect(port, secrets["mlflow_db"], "mlflow", user="mlflow") as db:
            return db.execute(sql).fetchall()


@pytest.fixture(scope="module")
def stack(tmp_path_factory, s3) -> Stack:
    repo = make_repo(tmp_path_factory.mktemp("stack"), seeds=None)
    for folder in ("flows", "tasks"):  # a worker runs the project's own flows
        shutil.copytree(
            REPO_ROOT / folder, repo.path / folder, ignore=shutil.ignore_patterns("__pycache__")
        )
    deployments = yaml.safe_load((REPO_ROOT / "prefect.yaml").read_text())
    watcher = next(d for d in deployments["deployments"] if d["name"] == "watcher")
    watcher["parameters"]["poll_seconds"] = 1
    (repo.path / "prefect.yaml").write_text(yaml.safe_dump(deployments, sort_keys=False))
    params = yaml.safe_load((repo.path / "params.yaml").read_text())
    # 2 epochs on 200 images: floors it clears instead of the first-model baselines
    params["gate"].update(min_top1=0.0, min_class_recall=0.0, first_model_baselines=[])
    params["flows"].update(settle_seconds=0, watch_interval_seconds=1)
    params["data"]["dvc"]["remote_url"] = f"s3://{BUCKET}/dvc"
    params["stack"].update(
        postgres_port=free_port(),
        mlflow_port=free_port(),
        prefect_port=free_port(),
        worker_poll_seconds=1,
        queue_retry_seconds=1,
        artifacts=f"s3://{BUCKET}/mlflow",
    )
    (repo.path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    repo.env.update(s3)
    # this checkout's code first, and whatever else the suite runs with (e.g. an extra site)
    repo.env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH")) if p
    )
    for key in ("MLFLOW_TRACKING_URI", "PREFECT_API_URL"):
        repo.env.pop(key, None)
    repo.run("visionloop", "data", "demo", "--out", str(repo.path / "held"))
    for drop, keep in IMAGES_PER_CLASS.items():
        for label in (repo.path / "held" / drop).iterdir():
            for extra in sorted(label.iterdir())[keep:]:
                extra.unlink()
    repo.commit("project")
    try:
        up = repo.run("visionloop", "stack", "up")
        exports = repo.run("visionloop", "stack", "env")
        env = dict(repo.env)
        for line in exports.splitlines():
            key, _, value = line.removeprefix("export ").partition("=")
            env[key] = value.strip("'")
        yield Stack(repo, env, params, up)
    finally:
        down = repo.call("visionloop", "stack", "down")
        print(down.stdout, down.stderr)


def land(stack: Stack, drop: str) -> None:
    target = stack.repo.path / "data" / "incoming" / drop
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(stack.repo.path / "held" / drop, target)
    (target / "READY").write_text("")


def wait_for(what: str, check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


def state_of(run: dict) -> str:
    return run["state"]["type"] if run.get("state") else "NONE"


def finished(stack: Stack, deployment_id: str, count: int) -> list[dict] | None:
    """The deployment's runs, oldest first, once there are `count` and all have ended."""
    runs = stack.runs(deployment_id)
    if len(runs) == count and all(state_of(run) in FINAL for run in runs):
        return runs
    return None


# ---- the stack comes up, once, and says where everything is ------------------------------


def test_up_starts_every_part_on_loopback_and_status_says_so(stack):
    for part in ("postgres", "mlflow", "prefect", "worker"):
        assert f"{part}: started" in stack.up_output, stack.up_output
    assert "prefect: deployed nightly, on-drop, prediction-log, watcher" in stack.up_output
    assert "started a run of watcher (always on)" in stack.up_output
    status = stack.cli("stack", "status", "--json")
    assert status.returncode == 0, status.stdout + status.stderr
    parts = {part["name"]: part for part in json.loads(status.stdout)}
    assert all(part["up"] for part in parts.values()), parts
    assert parts["mlflow"]["where"] == stack.env["MLFLOW_TRACKING_URI"]
    assert parts["mlflow"]["detail"] == f"artifacts: s3://{BUCKET}/mlflow"
    assert "retrain/on-drop" in parts["worker"]["detail"]
    secrets = stack.repo.path / ".visionloop" / "stack" / "secrets.json"
    assert secrets.stat().st_mode & 0o777 == 0o600
    for port in ("postgres_port", "mlflow_port", "prefect_port"):
        assert listening_only_on_loopback(stack.config["stack"][port])


def test_the_mlflow_server_is_one_process_with_no_job_runner(stack):
    """One uvicorn worker (several leave Nagle's algorithm on: ~40 ms a request) and none of
    MLflow's job-runner processes (~250 MB each, for GenAI jobs visionloop never runs)."""
    status = json.loads(stack.cli("stack", "status", "--json").stdout)
    (mlflow,) = [part for part in status if part["name"] == "mlflow"]
    tree = {pid: command_line(pid) for pid in descendants(mlflow["pid"])}
    (uvicorn,) = [pid for pid, line in tree.items() if "uvicorn" in line]
    assert descendants(uvicorn) == [], tree  # serving in its own process: no workers
    assert not [line for line in tree.values() if "huey" in line or "server.jobs" in line], tree


def descendants(pid: int) -> list[int]:
    children = [
        int(child)
        for task in Path(f"/proc/{pid}/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    return children + [d for child in children for d in descendants(child)]


def command_line(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def listening_only_on_loopback(port: int) -> bool:
    """Every socket listening on `port` (IPv4 and IPv6, from the kernel's tables) is bound
    to 127.0.0.1."""
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, port_hex = local.split(":")
            if state == "0A" and int(port_hex, 16) == port:  # 0A: LISTEN
                addresses.add(address)
    return addresses == {"0100007F"}  # 127.0.0.1, little-endian hex


def test_a_second_up_changes_nothing(stack):
    again = stack.cli("stack", "up")
    assert again.returncode == 0, again.stderr
    assert "started" not in again.stdout.replace("started a run", "")
    for part in ("postgres", "mlflow", "prefect", "worker"):
        assert f"{part}: already running" in again.stdout
    assert "already deployed" in again.stdout
    assert "started a run of watcher" not in again.stdout  # the one watcher run goes on


# ---- nobody gets in without the generated credentials -------------------------------------


def test_unauthenticated_requests_are_refused_with_no_content(stack):
    mlflow = stack.env["MLFLOW_TRACKING_URI"]
    probes = [
        f"{mlflow}/api/2.0/mlflow/experiments/search?max_results=10",
        f"{mlflow}/api/2.0/mlflow/runs/search",
        f"{mlflow}/api/2.0/mlflow/registered-models/search",
        f"{mlflow}/api/2.0/mlflow-artifacts/artifacts?path=",
        f"{mlflow}/get-artifact?path=model&run_uuid=0",
        f"{stack.prefect}/flows/filter",
        f"{stack.prefect}/deployments/filter",
        f"{stack.prefect}/flow_runs/filter",
        f"{stack.prefect}/logs/filter",
    ]
    wrong = {mlflow: "admin:wrong", stack.prefect: "visionloop:wrong"}
    for url in probes:
        post = "/filter" in url or url.endswith("runs/search")
        server = mlflow if url.startswith(mlflow) else stack.prefect
        for auth in (None, wrong[server]):
            status, body = raw_request(url, b"{}" if post else None, auth)
            assert status in (401, 403), (url, auth, status, body[:200])
            assert b"visionloop" not in body and b"retrain" not in body, (url, body[:200])
    assert raw_request(f"{mlflow}/health")[0] == 200  # the health checks stay open
    assert raw_request(f"{stack.prefect}/health")[0] == 200


def test_the_event_websockets_refuse_a_client_without_the_auth_string(stack):
    import asyncio

    import websockets

    async def connect(path: str, subprotocols=None):
        url = stack.prefect.replace("http://", "ws://") + path
        try:
            async with websockets.connect(url, subprotocols=subprotocols) as socket_:
                await socket_.send(json.dumps({"type": "auth", "token": "visionloop:wrong"}))
                await socket_.send(json.dumps({"type": "filter", "filter": {}}))
                return await asyncio.wait_for(socket_.recv(), 10)
        except websockets.InvalidStatus as exc:
            return exc.response.status_code
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else "closed"

    for path in ("/events/in", "/events/out"):
        assert asyncio.run(connect(path)) == 403
        assert asyncio.run(connect(path, subprotocols=["prefect"])) == 1008  # policy violation


def raw_request(url: str, data: bytes | None = None, auth: str | None = None):
    headers = {"Content-Type": "application/json"}
    if auth:
        headers.update(http.basic_auth(auth))
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_wrong_credentials_end_with_one_line(stack):
    wrong_mlflow = {**stack.env, "MLFLOW_TRACKING_PASSWORD": "wrong"}
    listed = stack.cli("models", env=wrong_mlflow)
    assert listed.returncode != 0
    assert "refused the request (UNAUTHENTICATED)" in listed.stderr
    assert "Traceback" not in listed.stderr and len(listed.stderr.strip().splitlines()) == 1
    wrong_prefect = {**stack.env, "PREFECT_API_AUTH_STRING": "visionloop:wrong"}
    flows = subprocess.run(
        [sys.executable, "-m", "flows", "run"],
        cwd=stack.repo.path,
        env=wrong_prefect,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert flows.returncode != 0
    assert "refused the request (HTTP 401)" in flows.stderr, flows.stderr
    assert "Traceback" not in flows.stderr
    with pytest.raises(StackError, match="rejected the password"):
        postgres.connect(stack.config["stack"]["postgres_port"], "wrong")


# ---- a drop arrives -> the worker runs the deployment -> a model version in PostgreSQL -----


def test_a_drop_and_three_simultaneous_triggers_make_one_version_on_the_worker(stack):
    on_drop = stack.deployment_id("retrain", "on-drop")
    land(stack, "digits-001")
    first = wait_for("the watcher's event to start on-drop", lambda: stack.runs(on_drop), 120)
    for _ in range(2):  # two more triggers while the first run is under way
        stack.api(f"/deployments/{on_drop}/create_flow_run", {})
    runs = wait_for("three on-drop runs to finish", lambda: finished(stack, on_drop, 3), 480)

    assert [state_of(run) for run in runs] == ["COMPLETED"] * 3, [r["state"] for r in runs]
    assert all(run["work_pool_name"] == stack.config["stack"]["work_pool"] for run in runs)
    versions = stack.mlflow_db("SELECT name, version FROM model_versions")
    assert versions == [("visionloop-classifier", 1)]  # one drop, one version
    aliases = stack.mlflow_db("SELECT alias, version FROM registered_model_aliases")
    assert ("champion", 1) in aliases
    assert stack.mlflow_db("SELECT count(*) FROM runs WHERE status = 'FINISHED'")[0][0] >= 1
    trained = next(r for r in runs if "epoch 1/2" in stack.logs(r["id"]))
    logs = stack.logs(trained["id"])
    for line in (
        "drop digits-001 ingested as",
        "files in 200",
        "validation: ",
        "epoch 2/2",
        "gate: passed (first_model)",
        "registry: promoted v1",
    ):
        assert line in logs, logs
    assert first[0]["id"] in {r["id"] for r in runs}
    assert s3_keys(stack.env, "mlflow/"), "MLflow artifacts are in the S3 artifact store"
    assert s3_keys(stack.env, "dvc/files/md5/"), "the DVC remote on S3 got the data"
    watcher_runs = stack.runs(stack.deployment_id("watch-drops", "watcher"))
    assert [state_of(r) for r in watcher_runs] == [
        "RUNNING"
    ]  # one long-lived run, not one per look


# ---- a server that dies while a flow runs ----------------------------------------------


def test_mlflow_dying_mid_flow_fails_the_run_with_one_line_and_status_tells(stack):
    on_drop = stack.deployment_id("retrain", "on-drop")
    before = {run["id"] for run in stack.runs(on_drop)}
    land(stack, "digits-002")
    run = wait_for(
        "a new on-drop run to be running",
        lambda: next(
            (r for r in stack.runs(on_drop) if r["id"] not in before and state_of(r) == "RUNNING"),
            None,
        ),
        120,
    )
    pid = json.loads((stack.repo.path / ".visionloop/stack/run/mlflow.pid").read_text())["pid"]
    os.killpg(pid, signal.SIGKILL)  # a crash: no clean shutdown
    final = wait_for("the run to end", lambda: finished(stack, on_drop, len(before) + 1), 300)[-1]
    assert final["id"] == run["id"]

    assert state_of(final) == "FAILED"
    message = final["state"]["message"]
    assert (
        f"the MLflow tracking server {stack.env['MLFLOW_TRACKING_URI']} does not answer" in message
    )
    status = stack.cli("stack", "status")
    assert status.returncode == 3
    mlflow_line = next(line for line in status.stdout.splitlines() if line.startswith("mlflow"))
    assert "DOWN" in mlflow_line and "stale PID file" in mlflow_line, status.stdout
    repaired = stack.cli("stack", "up")
    assert repaired.returncode == 0, repaired.stderr
    assert "mlflow: started" in repaired.stdout and "postgres: already running" in repaired.stdout
    assert stack.cli("stack", "status").returncode == 0
