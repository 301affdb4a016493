"""`make demo`: the whole story on the demo digits, one drop at a time.

The first drop trains the first champion; a later drop retrains, and the gate decides
whether the new model replaces it. Each step prints what happened, and the end prints where
to look (MLflow UI, Prefect UI, DVC metrics).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter

from flows.retrain import retrain
from visionloop.artifacts.verdict import VERDICT_MD
from visionloop.config import Config
from visionloop.data.demo import write_demo_drops
from visionloop.pipeline import reports
from visionloop.promotion.registry import list_versions
from visionloop.tracking import is_server, tracking_uri

STORY = ("digits-001", "digits-002")


def tell_story(config: Config, params_path: Path, echo: Callable[[str], None]) -> bool:
    """Each drop goes through the deployed flow's entry (`retrain` with the params path)."""
    held = config.data.incoming_dir.parent / "demo-drops"
    write_demo_drops(held, config.data.demo)
    for drop in STORY:
        echo(f"\n=== a new drop lands: {drop}")
        _land(held / drop, config.data.incoming_dir / drop)
        started = time.perf_counter()
        state = retrain(params=str(params_path.resolve()), return_state=True)
        wall = time.perf_counter() - started
        if not state.is_completed():
            echo(f"retrain: {state.name}: {state.message}")
            return False
        summary = state.result()
        echo("\n".join(reports.summary_block(config, summary)))
        tasks = task_seconds(state.state_details.flow_run_id)
        parts = reports.time_parts(wall, summary["stage_seconds"], summary["dvc_seconds"], tasks)
        echo(reports.time_line(wall, parts))
        _print_versions(config, echo)
    _print_where_to_look(config, echo)
    return True


def _land(source: Path, target: Path) -> None:
    """Move a held drop into the incoming folder, as a user's copy would arrive."""
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)
    (target / "READY").write_text("")  # complete: no need to wait for it to settle


def task_seconds(flow_run_id) -> dict[str, float]:
    """Seconds the task runs of a flow run and of its subflows spent Running, by the task's
    function (a task key is `<function>-<hash>`): Prefect's own record of each task."""
    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id={"any_": [flow_run_id]})
        )
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id={"any_": [flow_run_id, *(c.id for c in children)]})
        )
    seconds: dict[str, float] = {}
    for run in runs:
        function = run.task_key.rsplit("-", 1)[0]
        seconds[function] = seconds.get(function, 0.0) + run.total_run_time.total_seconds()
    return seconds


def _print_versions(config: Config, echo: Callable[[str], None]) -> None:
    echo("registry:")
    for version in list_versions(config):
        aliases = ",".join(version["aliases"]) or "-"
        echo(
            f"  v{version['version']:<3} {aliases:<20} gate={version['gate']:<8} "
            f"top1={version['top1'] or '?'} f1={version.get('f1_macro') or '?'} "
            f"min_recall={version.get('min_class_recall') or '?'}  {version['summary']}"
        )


def _print_where_to_look(config: Config, echo: Callable[[str], None]) -> None:
    root = config.root
    uri = tracking_uri(config)
    mlflow = uri if is_server(uri) else f"mlflow ui --backend-store-uri {uri}"
    api = os.environ.get("PREFECT_API_URL")  # a running server (`visionloop stack`)
    prefect = (
        api.removesuffix("/api")
        if api
        else f"PREFECT_HOME={config.flows.prefect_home} prefect server start"
    )
    echo(
        "\nWhere to look:\n"
        f"  runs, metrics, registry: {mlflow}\n"
        f"  flow runs, artifacts:    {prefect}\n"
        f"  metrics per stage:       cd {root} && dvc metrics show && dvc plots show\n"
        f"  the last verdict:        cat {config.gate.dir / VERDICT_MD}"
    )
