"""`python -m flows run|monitor|serve|demo`, from the project folder: visionloop's Prefect side.

The flows belong to the project (like dvc.yaml), not to the installed library, which never
imports Prefect. Offline defaults, with the project's PREFECT_HOME, are applied before
Prefect is first imported: Prefect reads its settings at import.
"""

from __future__ import annotations

import contextlib
import os
import signal
from pathlib import Path

import click

from visionloop.cli import OneLineErrors
from visionloop.config import DEFAULT_PARAMS, Config, load_config
from visionloop.env import apply_offline_defaults


class FlowsContext:
    def __init__(self, params_path: Path) -> None:
        self.params_path = params_path
        self.config: Config = load_config(params_path)
        apply_offline_defaults(prefect_home=self.config.flows.prefect_home)

    def check_server(self) -> None:
        """A configured server that is down or refuses the auth string: one line, now."""
        if api_url := os.environ.get("PREFECT_API_URL"):
            from flows.server import check_api

            check_api(api_url)


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--params",
    "params_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=DEFAULT_PARAMS,
    envvar="VISIONLOOP_PARAMS",
    show_default=True,
    help="The params.yaml to read (env: VISIONLOOP_PARAMS).",
)
@click.pass_context
def flows(ctx: click.Context, params_path: Path) -> None:
    """Prefect flows: retrain once now, the demo story, or serve the schedule and triggers."""
    ctx.obj = FlowsContext(params_path)


@flows.command("run")
@click.pass_obj
def run(app: FlowsContext) -> None:
    """Run `retrain` once now: ingest complete drops, train, gate, promote, push."""
    from flows.retrain import retrain
    from visionloop.pipeline import reports

    app.check_server()
    state = retrain(params=str(app.params_path.resolve()), return_state=True)
    if state.is_completed():
        click.echo("\n".join(reports.summary_block(app.config, state.result())))
    click.echo(f"retrain: {state.name}: {state.message or ''}".rstrip(": "))
    if state.is_failed() or state.is_crashed():
        raise SystemExit(1)


@flows.command("monitor")
@click.pass_obj
def monitor_once(app: FlowsContext) -> None:
    """Run `monitor` once now: prediction-log drift, the event on warn or alert."""
    from flows.retrain import monitor

    app.check_server()
    report = monitor(params=str(app.params_path.resolve()))
    drift = report["drift"]
    click.echo(
        f"monitor: {report['verdict']}" + (f" ({drift['skipped']})" if "skipped" in drift else "")
    )


@flows.command("demo")
@click.pass_obj
def demo(app: FlowsContext) -> None:
    """The whole story on the demo digits: a first champion, then a later drop through the gate."""
    from flows.demo import tell_story

    app.check_server()
    if not tell_story(app.config, app.params_path, click.echo):
        raise SystemExit(1)


@flows.command("serve")
@click.pass_obj
def serve(app: FlowsContext) -> None:
    """Serve the nightly, on-drop, watcher and prediction-log deployments until interrupted.

    With no PREFECT_API_URL set, a local `prefect server` (SQLite, loopback) is started
    for the duration and stopped on exit.
    """
    from flows.server import local_prefect_server

    config = app.config
    app.check_server()
    # SIGTERM (a service manager stopping us) unwinds like Ctrl-C, so the server child stops;
    # once serving, Prefect's runner takes SIGTERM over and shuts down the same way.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    with contextlib.ExitStack() as stack:
        if not os.environ.get("PREFECT_API_URL"):
            log_file = config.flows.prefect_home / "server.log"
            api_url = stack.enter_context(local_prefect_server(config.flows.server_port, log_file))
            os.environ["PREFECT_API_URL"] = api_url
            click.echo(f"started a local prefect server: {api_url} (log: {log_file})")
        from flows.deployments import build_deployments, serve_deployments
        from flows.notifications import ensure_notifications

        for automation in ensure_notifications(config):
            click.echo(
                f"notifications: automation {automation.name!r} -> {config.flows.notify_block}"
            )
        serve_deployments(build_deployments(config, app.params_path))


if __name__ == "__main__":
    flows(prog_name="python -m flows")
