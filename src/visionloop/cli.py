"""The `visionloop` command line. Only this module knows about the CLI.

Heavy libraries (torch, mlflow, great_expectations, dvc) are imported inside the commands
that need them, so `visionloop --help` stays fast. The Prefect flows are the project's, not
the library's: `python -m flows run|serve|demo` from the project folder.
"""

from __future__ import annotations

import json
import os
from functools import cached_property
from pathlib import Path

import click

from visionloop.config import DEFAULT_PARAMS, Config, load_config
from visionloop.env import apply_offline_defaults
from visionloop.errors import VisionloopError, os_error_line
from visionloop.pipeline.stages import STAGES, Stage, run_stage


class _UserError(click.ClickException):
    """A VisionloopError shown as one `Error: ...` line with its exit code, no traceback."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class OneLineErrors(click.Group):
    """A command group whose expected errors end as one line and their exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except VisionloopError as exc:
            raise _UserError(str(exc), exc.exit_code) from None
        except OSError as exc:  # a full disk, a read-only mount, ...: one line, the path
            line = os_error_line(exc)
            if line is None:
                raise
            raise _UserError(line, 1) from None


def echo_json(payload) -> None:
    """A command's result on stdout, for people and for `jq` alike."""
    click.echo(json.dumps(payload, indent=2, sort_keys=True, default=str))


class AppContext:
    """What every command shares: the params file, read once on first use."""

    def __init__(self, params_path: Path) -> None:
        self.params_path = params_path

    @cached_property
    def config(self) -> Config:
        return load_config(self.params_path)


def _print_version(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    """--version, looked up only when asked (package metadata is slow to import)."""
    if value and not ctx.resilient_parsing:
        import visionloop

        click.echo(f"visionloop, version {visionloop.__version__}")
        ctx.exit()


@click.group(cls=OneLineErrors, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
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
def cli(ctx: click.Context, params_path: Path) -> None:
    """visionloop: ingest labelled image drops, train, gate and promote a classifier."""
    ctx.obj = AppContext(params_path)


@cli.group()
def data() -> None:
    """Data drops: demo data, ingest, migrating the raw store."""


@data.command("demo")
@click.option(
    "--out",
    type=click.Path(path_type=Path, file_okay=False),
    default=None,
    help="Folder for the drops [default: data.incoming_dir].",
)
@click.pass_obj
def data_demo(app: AppContext, out: Path | None) -> None:
    """Write scikit-learn's digits as PNG drops (one initial, then later ones)."""
    from visionloop.data.demo import write_demo_drops

    config = app.config
    drops = write_demo_drops(out or config.data.incoming_dir, config.data.demo)
    for drop in drops:
        click.echo(f"wrote {drop.count:5d} images in {len(drop.per_class)} classes to {drop.path}")


@data.command("ingest")
@click.argument("drops", nargs=-1)
@click.option(
    "--allow-new-classes",
    is_flag=True,
    default=None,
    help="Accept drops that bring classes not yet in the class map "
    "[default: data.ingest.allow_new_classes].",
)
@click.option(
    "--accept-label-issues",
    is_flag=True,
    help="Take drops held for their labels (data.ingest.label_issues: hold) as they are.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.pass_obj
def data_ingest(
    app: AppContext,
    drops: tuple[str, ...],
    allow_new_classes: bool | None,
    accept_label_issues: bool,
    as_json: bool,
    quiet: bool,
) -> None:
    """Take drops in (default: every drop in data.incoming_dir not yet ingested).

    A DROP is a name in data.incoming_dir or a path: a folder of class-named folders, or a
    .zip/.tar/.tar.gz of one. Exits 3 when a drop was rejected or held.
    """
    from visionloop.data.ingest.summary import DropsNeedAttention, format_summary, to_json
    from visionloop.monitoring.intake import ingest_with_checks

    result = ingest_with_checks(
        app.config,
        list(drops) or None,
        allow_new_classes=allow_new_classes,
        accept_label_issues=accept_label_issues,
        progress=not quiet,
    )
    click.echo(to_json(result) if as_json else "\n".join(format_summary(result)))
    if result.problems():
        raise DropsNeedAttention(result)


@data.command("migrate")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def data_migrate(app: AppContext, as_json: bool) -> None:
    """Convert data.raw_dir from one file per image to one shard per drop, in place.

    Every image is checked (count and sha256) before the switch; safe to interrupt and to
    run again (an interrupted migration is finished; a migrated store is left alone).
    """
    from visionloop.data.ingest.migrate import migrate

    config = app.config
    result = migrate(config)
    if as_json:
        echo_json(result.to_dict())
    else:
        click.echo(result.describe(os.path.relpath(config.data.raw_dir, config.root)))


@cli.command("train")
@click.option(
    "--resume",
    is_flag=True,
    help="Continue from the last good checkpoint in train.checkpoint_dir (same MLflow run).",
)
@click.pass_obj
def train_command(app: AppContext, resume: bool) -> None:
    """Train on the prepared cache; under `torchrun --nproc-per-node N -m visionloop train`, DDP."""
    from visionloop.training.engine import train

    summary = train(app.config, resume="always" if resume else "never")
    if summary:  # empty on the other DDP processes: rank 0 reports
        echo_json(summary)


@cli.group()
def weights() -> None:
    """Pretrained weights for `train.pretrained: torchvision` (torch hub's cache, TORCH_HOME)."""


@weights.command("fetch")
@click.argument("arch")
def weights_fetch(arch: str) -> None:
    """Download ARCH's torchvision ImageNet weights into torch hub's cache (needs the network
    once; training then reads the cached file offline)."""
    from visionloop.models.zoo import ZOO, fetch_weights

    if arch not in ZOO:
        raise VisionloopError(f"unknown model {arch!r}; choose one of {', '.join(sorted(ZOO))}")
    click.echo(f"{arch}: {fetch_weights(arch)}")


@weights.command("path")
@click.argument("arch")
def weights_path(arch: str) -> None:
    """Where ARCH's cached weights are (or would be), and whether the file is there."""
    from visionloop.models.zoo import ZOO, cached_weights_path

    if arch not in ZOO:
        raise VisionloopError(f"unknown model {arch!r}; choose one of {', '.join(sorted(ZOO))}")
    path = cached_weights_path(arch)
    click.echo(f"{path} ({'cached' if path.is_file() else 'missing'})")


@cli.group(hidden=not STAGES)
def stage() -> None:
    """Run one pipeline stage (what dvc.yaml's commands call)."""


def _add_stage_command(spec: Stage) -> None:
    @stage.command(spec.name, help=spec.summary)
    @click.pass_obj
    def run(app: AppContext) -> None:
        summary = run_stage(spec.name, app.config)
        echo_json(summary)


for _spec in STAGES.values():
    _add_stage_command(_spec)


@cli.group(invoke_without_command=True)
@click.pass_context
def models(ctx: click.Context) -> None:
    """The model registry: list versions (default), register and promote the candidate."""
    if ctx.invoked_subcommand is None:
        ctx.invoke(models_list)


@models.command("list")
@click.pass_obj
def models_list(app: AppContext) -> None:
    """List registered versions with their aliases and gate verdicts."""
    from visionloop.promotion.registry import list_versions

    rows = list_versions(app.config)
    if not rows:
        click.echo(f"no registered versions of {app.config.registry.model_name} yet")
    for row in rows:
        aliases = ",".join(row["aliases"]) or "-"
        click.echo(
            f"v{row['version']:<4} {aliases:<22} gate={row['gate']:<9} "
            f"top1={row['top1'] or '-':<8} f1={row.get('f1_macro') or '-':<8} "
            f"min_recall={row.get('min_class_recall') or '-':<8} {row['created']}  {row['summary']}"
        )


@models.command("register")
@click.option("--no-promote", is_flag=True, help="Only register; do not apply the verdict.")
@click.pass_obj
def models_register(app: AppContext, no_promote: bool) -> None:
    """Register the candidate, then promote it if the gate's verdict passed."""
    from visionloop.promotion.registry import register_and_promote, register_candidate

    if no_promote:
        outcome = {"action": "registered", "version": register_candidate(app.config)}
    else:
        outcome = register_and_promote(app.config)
    echo_json(outcome)


@cli.command("promote")
@click.option("--version", "version", required=True, help="The registered version to promote.")
@click.option("--reason", required=True, help="Why (kept in the audit log).")
@click.pass_obj
def promote_command(app: AppContext, version: str, reason: str) -> None:
    """Make a version that passed its gate the champion (a recorded manual override)."""
    from visionloop.promotion.registry import promote

    echo_json(promote(app.config, version, reason))


@cli.command("rollback")
@click.option("--reason", default="rollback", show_default=True, help="Kept in the audit log.")
@click.pass_obj
def rollback_command(app: AppContext, reason: str) -> None:
    """Move champion back to the previous champion, after a smoke prediction."""
    from visionloop.promotion.registry import rollback

    echo_json(rollback(app.config, reason))


@cli.command("tune")
@click.option("--trials", type=click.IntRange(min=1), required=True, help="Finished trials wanted.")
@click.option("--timeout", type=click.FloatRange(min=1), default=None, help="Seconds, at most.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes running trials of the one study.",
)
@click.option("--study", "study_name", default=None, help="[default: tune.study]")
@click.option(
    "--apply", "apply_patch", is_flag=True, help="Write the best params into params.yaml."
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def tune_command(
    app: AppContext,
    trials: int,
    timeout: float | None,
    workers: int,
    study_name: str | None,
    apply_patch: bool,
    as_json: bool,
) -> None:
    """Search tune.space with Optuna (TPE, median pruning); each trial a training run.

    The study is kept in the study storage (tune.storage), so running the same command again
    continues it. The best params are shown as a diff of params.yaml; --apply writes them.
    """
    from visionloop.experiments import space
    from visionloop.experiments.tune import tune

    outcome = tune(app.config, trials, timeout, workers, study_name)
    patched, diff = space.params_diff(app.params_path, outcome["best_params"])
    outcome["applied"] = bool(apply_patch and diff)
    if outcome["applied"]:
        space.apply_patch(app.params_path, patched)
    if as_json:
        echo_json({**outcome, "diff": diff})
        return
    click.echo(tune_summary(outcome))
    if outcome["best_trial"] is None:
        return
    if not diff:
        click.echo(f"{app.params_path} already holds the best trial's params")
        return
    click.echo(diff, nl=False)
    click.echo(
        f"applied to {app.params_path}"
        if outcome["applied"]
        else "run again with --apply to "
        f"write this into {app.params_path} (the patch alone: tune.dir/best_params.yaml)"
    )


def tune_summary(outcome: dict) -> str:
    counts = outcome["trials"]
    line = (
        f"study {outcome['study']} ({outcome['storage']}): {counts['complete']} complete, "
        f"{counts['pruned']} pruned, {counts['fail']} failed"
    )
    if outcome["best_trial"] is None:
        return line + "; no trial completed, so there are no best params yet"
    return (
        f"{line}; best trial {outcome['best_trial']}: {outcome['metric']} "
        f"{outcome['best_value']:.4g}"
    )


@cli.command("reproduce")
@click.option("--version", "version", required=True, help="The registered version to rebuild.")
@click.option("--json", "as_json", is_flag=True, help="Print the outcome as JSON.")
@click.pass_context
def reproduce_command(ctx: click.Context, version: str, as_json: bool) -> None:
    """Rebuild a registered version from its lineage (commit, data version, params, seed)
    in a temporary checkout and compare: exit 0 when reproduced, 1 when not."""
    from dataclasses import asdict

    from visionloop.experiments.reproduce import reproduce

    outcome = reproduce(ctx.obj.config, version)
    if as_json:
        echo_json({**asdict(outcome), "reproduced": outcome.reproduced})
    else:
        click.echo(outcome.line)
        click.echo(f"report: {outcome.report}")
    ctx.exit(0 if outcome.reproduced else 1)


@cli.group()
def stack() -> None:
    """The production stack on this machine: PostgreSQL, MLflow, Prefect and a worker, all on
    127.0.0.1 with generated passwords (docs/production.md)."""


@stack.command("up")
@click.pass_obj
def stack_up(app: AppContext) -> None:
    """Start whatever part of the stack is not running (a second `up` changes nothing)."""
    from visionloop.stack import control

    control.up(app.config, click.echo)
    click.echo("\n".join(["", *control.status_lines(control.status(app.config)), ""]))
    click.echo("\n".join(control.where_lines(app.config)))


@stack.command("down")
@click.pass_obj
def stack_down(app: AppContext) -> None:
    """Stop the worker, the servers and PostgreSQL (the data stays)."""
    from visionloop.stack import control

    control.down(app.config, click.echo)


@stack.command("status")
@click.option("--json", "as_json", is_flag=True, help="Print the parts as JSON.")
@click.pass_obj
def stack_status(app: AppContext, as_json: bool) -> None:
    """What runs where; exit status 3 when a part is down."""
    from visionloop.stack import control

    parts = control.status(app.config)
    if as_json:
        echo_json(control.status_json(parts))
    else:
        click.echo("\n".join(control.status_lines(parts)))
    if not all(part.up for part in parts):
        raise SystemExit(3)


@stack.command("env")
@click.pass_obj
def stack_env(app: AppContext) -> None:
    """Export lines that point a shell at the stack: eval "$(visionloop stack env)"."""
    from visionloop.stack import control

    click.echo("\n".join(control.env_lines(app.config)))


RUNTIMES = click.Choice(["auto", "torch", "onnx", "int8"])
MODEL_HELP = (
    "A registry URI (models:/NAME@ALIAS, models:/NAME/VERSION) or a bundle folder "
    "[default: serving.model, else models:/<registry.model_name>@champion]."
)


@cli.command("predict")
@click.argument("paths", nargs=-1)
@click.option("--model", "model_uri", default=None, help=MODEL_HELP)
@click.option("--top-k", type=click.IntRange(min=1), default=None, help="[default: serving.top_k]")
@click.option(
    "--output",
    "-o",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help="preds.csv, .json or .jsonl [default: CSV on stdout].",
)
@click.option("--runtime", type=RUNTIMES, default=None, help="[default: serving.runtime]")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar or progress lines.")
@click.pass_obj
def predict_command(
    app: AppContext,
    paths: tuple[str, ...],
    model_uri: str | None,
    top_k: int | None,
    output: Path | None,
    runtime: str | None,
    quiet: bool,
) -> None:
    """Classify images: files, folders (recursive), globs, .zip/.tar archives.

    One row per file: path, sha256, label, confidence, top-k, model and version; a file that
    cannot be read or decoded gets its reason code in `error` and the batch goes on.
    """
    from visionloop.serving.batch import run_predict

    _, summary = run_predict(
        app.config, list(paths), model_uri, top_k, output, runtime, progress=not quiet
    )
    click.echo(summary, err=True)


@cli.group()
def monitor() -> None:
    """Watch what the model sees (docs/monitoring.md)."""


@monitor.command("drift")
@click.option("--model", "model_uri", default=None, help=MODEL_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.pass_obj
def monitor_drift(app: AppContext, model_uri: str | None, as_json: bool) -> None:
    """Drift of the prediction log's last monitoring.window_days days against the champion's
    training images. Exits 4 on an alert."""
    from visionloop.monitoring.log_drift import check_prediction_log
    from visionloop.monitoring.reference import watched_from

    report = check_prediction_log(app.config, watched_from(app.config, model_uri))
    if as_json:
        echo_json(report)
    else:
        click.echo(drift_line(report))
    if report["verdict"] == "alert":
        click.get_current_context().exit(4)


def drift_line(report: dict) -> str:
    drift = report["drift"]
    if "skipped" in drift:
        return f"prediction log: drift check skipped ({drift['skipped']})"
    mmd = f"MMD p {drift['mmd_p']:.3g}" if drift.get("mmd_p") is not None else "MMD skipped"
    return (
        f"prediction log since {report['since']}: {drift['verdict']} (p {drift['p_value']:.3g}; "
        f"{mmd}, KS p {drift['ks_p']:.3g}, D {drift['ks_d']:.2f}; {drift['images']} images, "
        f"mean confidence {drift['mean_confidence']:.2f} vs {drift['reference_confidence']:.2f})"
    )


@cli.command("explain")
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--model", "model_uri", default=None, help=MODEL_HELP)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("explanations"),
    show_default=True,
    help="Folder for the <image>.gradcam.png overlays.",
)
@click.option("--target", default=None, help="Explain this class [default: the predicted one].")
@click.option("--json", "as_json", is_flag=True, help="Print what was written as JSON.")
@click.pass_obj
def explain_command(
    app: AppContext,
    images: tuple[Path, ...],
    model_uri: str | None,
    out: Path,
    target: str | None,
    as_json: bool,
) -> None:
    """Grad-CAM overlays: where in each IMAGE the model found its evidence."""
    from visionloop.monitoring.explain import explain_files
    from visionloop.monitoring.reference import watched_from

    missing = [str(p) for p in images if not p.is_file()]
    if missing:
        raise VisionloopError(f"no such image file: {', '.join(missing)}")
    watched = watched_from(app.config, model_uri)
    try:
        written = explain_files(watched.classifier, list(images), out, target)
    except (OSError, SyntaxError) as exc:
        raise VisionloopError(f"an image could not be read ({exc}); pass image files") from None
    if as_json:
        echo_json(written)
        return
    for item in written:
        click.echo(
            f"{item['image']}: {item['class']} p={item['probability']:.2f} -> {item['overlay']}"
        )


@cli.command("select")
@click.option(
    "--from",
    "source",
    required=True,
    help="A folder of unlabelled images, or `prediction-log` (its kept images).",
)
@click.option("--budget", type=click.IntRange(min=1), required=True, help="Images to pick.")
@click.option("--model", "model_uri", default=None, help=MODEL_HELP)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="[default: monitoring.select.out_dir]",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.pass_obj
def select_command(
    app: AppContext,
    source: str,
    budget: int,
    model_uri: str | None,
    out: Path | None,
    as_json: bool,
) -> None:
    """Pick the unlabelled images most worth labelling (uncertain and diverse).

    Writes <out>/<time>/images/ and to-label.csv. Sort the images into class folders of a
    new drop and put it in data.incoming_dir: it is ingested like any other drop.
    """
    from visionloop.monitoring.reference import watched_from
    from visionloop.monitoring.select import select_to_label

    summary = select_to_label(app.config, watched_from(app.config, model_uri), source, budget, out)
    if as_json:
        echo_json(summary)
        return
    for line in summary["left_out"]:
        click.echo(f"left out: {line}", err=True)
    click.echo(
        f"selected {summary['selected']} of {summary['candidates']} images -> "
        f"{summary['folder']} (ranked in {summary['csv']})"
    )


@cli.command("serve")
@click.option("--model", "model_uri", default=None, help=MODEL_HELP + " An @ALIAS is followed.")
@click.option("--host", default=None, help="[default: serving.host, 127.0.0.1]")
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="[default: serving.port]")
@click.option("--runtime", type=RUNTIMES, default=None, help="[default: serving.runtime]")
@click.pass_obj
def serve_command(
    app: AppContext, model_uri: str | None, host: str | None, port: int | None, runtime: str | None
) -> None:
    """Serve the model over REST (POST /v1/predict, GET /v1/model, /healthz, /metrics).

    With an @ALIAS (default @champion) the server polls the registry every
    serving.poll_seconds and swaps to the new version once it passed its integrity and smoke
    checks; requests in flight finish on the model they started with.
    """
    from visionloop.serving.server import serve

    serve(app.config, model_uri=model_uri, host=host, port=port, runtime=runtime)


def main() -> None:
    apply_offline_defaults()
    cli.main(prog_name="visionloop")
