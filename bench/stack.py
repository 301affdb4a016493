"""Orchestration overhead of a retrain: the embedded default against `visionloop stack`.

    python bench/stack.py            # about 12 minutes on 2 shared cores
    python bench/stack.py --keep /tmp/bench-stack

Builds two identical projects (git + DVC, the project's code, flows/, tasks/, prefect.yaml)
and runs `python -m flows demo` in each: the demo digits' first drop trains the first
champion, a later drop goes through the gate. Each retrain prints its flow wall time and
the stages' own time (the stage functions, as `dvc repro` would run them); the difference
is the overhead, split into its parts (visionloop.pipeline.reports.TIME_PARTS): ingest
(with the drop's checks and `dvc add`), dvc (status and commit around each stage),
register (MLflow model, exports, aliases), push (`dvc push`), and prefect: the rest of the
flow run, i.e. orchestration proper (task and flow runs, subflow, artifacts, events,
heartbeats, a temporary server's start). Task parts are Prefect's own task-run times.

- embedded: no server configured: Prefect's temporary server, MLflow on SQLite;
- stack: `visionloop stack up` first (timed apart, a one-off), the same demo pointed at it
  with `stack env`; then a third drop runs as the on-drop deployment on the worker (the
  watcher announces it), timed from the run's creation to its end through the Prefect API;
  its `start` part is the run's creation to its flow running: `pickup` (until a worker took
  it) and `process` (the worker's new process: imports, the pull step, loading the flow).

The target: overhead <= 5% of a three-minute training (9 s).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench.pipeline import commit, pipeline_env  # noqa: E402

from visionloop.pipeline.reports import TIME_PARTS, time_parts  # noqa: E402
from visionloop.stack import http  # noqa: E402

TRAINING_SECONDS = 180  # the target is stated against a three-minute training
TIME_LINE = re.compile(r"time: ([\d.]+) s in all, .* of overhead \([^)]*\): (.*)$", re.M)
OVERHEAD_PARTS = TIME_PARTS[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", help="work in this folder and keep it")
    args = parser.parse_args()
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="vl-bench-stack-"))
    try:
        run(work)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path) -> None:
    env = pipeline_env()
    env["PYTHONPATH"] = os.pathsep.join(  # this checkout first, then what the caller had
        p for p in (env["PYTHONPATH"], os.environ.get("PYTHONPATH")) if p
    )
    for key in ("PREFECT_API_URL", "PREFECT_API_AUTH_STRING", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    embedded_project = setup_project(work / "embedded", env)
    stack_project = setup_project(work / "stack", env)

    embedded = demo(embedded_project, env)
    print(f"embedded: {embedded}", flush=True)

    started = time.perf_counter()
    check(["visionloop", "stack", "up"], stack_project, env)
    up_seconds = time.perf_counter() - started
    try:
        stack_env = {**env, **exports(stack_project, env)}
        on_stack = demo(stack_project, stack_env)
        print(f"stack: {on_stack}", flush=True)
        worker = worker_run(stack_project, stack_env)
        print(f"worker: {worker}", flush=True)
    finally:
        check(["visionloop", "stack", "down"], stack_project, env)

    print(f"\nload average at the end: {os.getloadavg()[0]:.1f} (2 cores; other work shares them)")
    print(f"`visionloop stack up` on a new project: {up_seconds:.1f} s (once)")
    header = "".join(f"{name:>9}" for name in OVERHEAD_PARTS)
    print(f"{'run':<42}{'wall s':>8}{'stages':>8}{'overhead':>9}{'of 3 min':>9}  |{header}")
    rows = [
        ("embedded, first drop (temporary server)", embedded[0]),
        ("embedded, later drop", embedded[1]),
        ("stack, first drop (flows run)", on_stack[0]),
        ("stack, later drop (flows run)", on_stack[1]),
        ("stack, a third drop on the worker", worker),
    ]
    for name, (wall, parts) in rows:
        overhead = wall - parts["stages"]
        print(
            f"{name:<42}{wall:8.1f}{parts['stages']:8.1f}{overhead:9.1f}"
            f"{overhead / TRAINING_SECONDS:9.1%}  |"
            + "".join(f"{parts[part]:9.1f}" for part in OVERHEAD_PARTS)
        )
    print(
        f"the worker's start: {worker[1]['pickup']:.1f} s until a worker took the run, "
        f"{worker[1]['process']:.1f} s from its new process to the flow running"
    )
    stack_overhead = on_stack[1][0] - on_stack[1][1]["stages"]
    embedded_overhead = embedded[1][0] - embedded[1][1]["stages"]
    print(f"overhead of a later drop, stack / embedded: {stack_overhead / embedded_overhead:.2f}")


def setup_project(folder: Path, env: dict[str, str]) -> Path:
    import yaml

    project = folder / "project"
    project.mkdir(parents=True)
    for name in ("dvc.yaml", "params.yaml", ".gitignore", "prefect.yaml"):
        shutil.copy(REPO_ROOT / name, project / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info")
    for name in ("src", "flows", "tasks"):
        shutil.copytree(REPO_ROOT / name, project / name, ignore=ignore)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["stack"].update(
        postgres_port=free_port(), mlflow_port=free_port(), prefect_port=free_port()
    )
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for command in (["git", "init", "-q"], ["dvc", "init", "-q"]):
        subprocess.run(command, cwd=project, env=env, check=True)
    shutil.copy(REPO_ROOT / ".dvc" / "config", project / ".dvc" / "config")
    commit(project, env, "project")
    return project


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check(command: list[str], project: Path, env: dict[str, str]) -> str:
    done = subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


def exports(project: Path, env: dict[str, str]) -> dict[str, str]:
    lines = check(["visionloop", "stack", "env"], project, env).splitlines()
    pairs = (line.removeprefix("export ").partition("=") for line in lines)
    return {key: value.strip("'") for key, _, value in pairs}


def demo(project: Path, env: dict[str, str]) -> list[tuple[float, dict[str, float]]]:
    """(wall, parts) of each retrain `flows demo` ran, from the time lines it prints."""
    output = check([sys.executable, "-m", "flows", "demo"], project, env)
    runs = []
    for match in TIME_LINE.finditer(output):
        shown = dict(part.split() for part in match[2].split(", "))
        stages = float(re.search(r"([\d.]+) s in the stages", match[0])[1])
        parts = {name: float(shown.get(name, 0.0)) for name in OVERHEAD_PARTS}
        runs.append((float(match[1]), {"stages": stages, **parts}))
    return runs


def worker_run(project: Path, env: dict[str, str]) -> tuple[float, dict[str, float]]:
    """Land the demo's third drop; the watcher announces it and the worker runs on-drop.
    Wall: the run's creation (the trigger) to its end; parts: from Prefect's records of the
    run (its states, its task runs, the pipeline-report artifact)."""
    api, auth = env["PREFECT_API_URL"], http.basic_auth(env["PREFECT_API_AUTH_STRING"])
    deployment = http.request(f"{api}/deployments/name/retrain/on-drop", headers=auth)["id"]
    query = {"flow_runs": {"deployment_id": {"any_": [deployment]}}}
    before = {run["id"] for run in http.request(f"{api}/flow_runs/filter", query, headers=auth)}
    drop = project / "data" / "incoming" / "digits-003"
    shutil.move(project / "data" / "demo-drops" / "digits-003", drop)
    (drop / "READY").write_text("")
    deadline = time.monotonic() + 900
    while time.monotonic() < deadline:
        runs = http.request(f"{api}/flow_runs/filter", query, headers=auth)
        new = [run for run in runs if run["id"] not in before]
        if new and new[0]["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            break
        time.sleep(1)
    else:
        sys.exit("the worker's run did not finish in 15 minutes")
    run = new[0]
    if run["state_type"] != "COMPLETED":
        sys.exit(f"the worker's run ended {run['state_type']}: {run['state']['message']}")
    created, running = _seconds(run["created"]), _seconds(run["start_time"])
    wall = _seconds(run["end_time"]) - created
    children = http.request(
        f"{api}/flow_runs/filter",
        {"flow_runs": {"parent_flow_run_id": {"any_": [run["id"]]}}},
        headers=auth,
    )
    stages, dvc = stage_seconds(api, auth, [c["id"] for c in children])
    tasks = task_seconds(api, auth, [run["id"], *(c["id"] for c in children)])
    parts = time_parts(wall, stages, dvc, tasks, start=running - created)
    states = http.request(f"{api}/flow_run_states/?flow_run_id={run['id']}", headers=auth)
    pending = min(_seconds(s["timestamp"]) for s in states if s["type"] == "PENDING")
    return wall, {**parts, "pickup": pending - created, "process": running - pending}


def stage_seconds(api: str, auth: dict[str, str], run_ids: list[str]) -> tuple[float, float]:
    """The seconds and dvc seconds columns of the subflow's pipeline-report artifact."""
    query = {"artifacts": {"flow_run_id": {"any_": run_ids}}}
    artifacts = http.request(f"{api}/artifacts/filter", query, headers=auth)
    report = next(a["data"] for a in artifacts if a["key"] == "pipeline-report")
    rows = re.findall(
        r"^\| \w+ \| (?:ran|up to date) \| ([\d.]+) \| ([\d.]+) \|$", report, flags=re.M
    )
    return sum(float(row[0]) for row in rows), sum(float(row[1]) for row in rows)


def task_seconds(api: str, auth: dict[str, str], run_ids: list[str]) -> dict[str, float]:
    """Seconds the flow runs' task runs spent Running, by function (flows.demo.task_seconds
    over HTTP: the bench's process has no Prefect settings of its own)."""
    query = {"flow_runs": {"id": {"any_": run_ids}}}
    seconds: dict[str, float] = {}
    for run in http.request(f"{api}/task_runs/filter", query, headers=auth):
        function = run["task_key"].rsplit("-", 1)[0]
        seconds[function] = seconds.get(function, 0.0) + run["total_run_time"]
    return seconds


def _seconds(timestamp: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(timestamp).timestamp()


if __name__ == "__main__":
    main()
