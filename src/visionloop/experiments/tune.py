"""`visionloop tune`: an Optuna study over `tune.space`, each trial one training run.

TPE draws each trial's params; the median pruner sees the early-stopping metric after every
epoch (the training loop's epoch callback) and stops a trial that is behind the median of
the finished trials at the same epoch. The study lives in the study storage
(experiments.storage), so a killed `tune` resumes: trials left running by a dead process
on this host are marked failed and their params tried again first. Each trial is an MLflow
child run (`tune trial 7`) under one parent run per study (`tune <study>`). Trials run in
this process, or in N worker processes sharing the study through the storage.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from visionloop.artifacts.prepared import require_split
from visionloop.atomic import write_json_atomic, write_text_atomic
from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.experiments.space import (
    nested,
    require_space,
    space_fingerprint,
    suggest,
    with_values,
)
from visionloop.experiments.storage import open_storage, study_storage_url, without_password
from visionloop.tracking import run_name, start_run

log = logging.getLogger(__name__)

BEST_PARAMS = "best_params.yaml"
STUDY_JSON = "study.json"
TRIALS_DIR = "trials"
ATTR_SPACE, ATTR_METRIC, ATTR_DATA = "space", "metric", "data"
ATTR_PARENT = "mlflow_parent_run_id"
ATTR_WORKER, ATTR_RUN = "worker", "mlflow_run_id"


class StudyClash(VisionloopError):
    """A study of that name exists with another space, metric or data."""

    exit_code = 2


@dataclass(frozen=True)
class StudyPlan:
    """What every worker needs to run trials of one study (picklable for worker processes)."""

    config: Config
    name: str
    storage_url: str
    trials: int  # finished (complete or pruned) trials the study should reach
    timeout: float | None
    parent_run_id: str


def tune(
    config: Config,
    trials: int,
    timeout: float | None = None,
    workers: int = 1,
    study_name: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) the study until it has `trials` finished trials or `timeout` seconds
    passed; the summary with the best params (the patch itself: best_params.yaml)."""
    if trials < 1 or workers < 1:
        raise StudyClash("--trials and --workers must be at least 1")
    space = require_space(config)
    name = study_name or config.tune.study
    url = study_storage_url(config)
    study = open_study(config, name, url)
    retried = recover_stale_trials(config, study)
    plan = StudyPlan(config, name, url, trials, timeout, parent_run(config, study))
    if workers == 1:
        run_trials(plan, 0)
    else:
        run_in_workers(plan, workers)
    summary = summarise(config, optuna_study(plan), space)
    return {**summary, "storage": without_password(url), "retried": retried}


# ---- the study --------------------------------------------------------------------------


def direction_of(config: Config) -> str:
    return "minimize" if config.train.early_stopping.monitor.endswith("loss") else "maximize"


def data_fingerprint(config: Config) -> str:
    """Which prepared train and val images the trials see: trials on other data do not
    belong in the same study."""
    from visionloop.training.mlflow_run import split_digest

    return ",".join(
        split_digest(require_split(config.prepare.dir, name)) for name in ("train", "val")
    )


def open_study(config: Config, name: str, url: str):
    """Create the study, or load it when it exists over the same space, metric and data."""
    import optuna

    storage = open_storage(url)
    wanted = {
        ATTR_SPACE: space_fingerprint(require_space(config)),
        ATTR_METRIC: config.train.early_stopping.monitor,
        ATTR_DATA: data_fingerprint(config),
    }
    try:
        study = optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        study = optuna.create_study(
            study_name=name, storage=storage, direction=direction_of(config)
        )
        for key, value in wanted.items():
            study.set_user_attr(key, value)
        return study
    for key, what in ((ATTR_SPACE, "search space"), (ATTR_METRIC, "metric"), (ATTR_DATA, "data")):
        if study.user_attrs.get(key) != wanted[key]:
            raise StudyClash(
                f"study {name!r} already exists in {without_password(url)} with another {what}; "
                "pass --study NEW_NAME (or set tune.study) to start a new one"
            )
    return study


def optuna_study(plan: StudyPlan, seed_offset: int = 0):
    """The study with this run's sampler and pruner (they are not stored, only the trials)."""
    import optuna

    tune_config = plan.config.tune
    storage = open_storage(plan.storage_url)
    done = len(storage.get_all_trials(storage.get_study_id_from_name(plan.name), deepcopy=False))
    # Seeded by the trials so far too: a resumed study does not redraw its first params.
    sampler = optuna.samplers.TPESampler(
        seed=tune_config.seed + done + 1000 * seed_offset,
        n_startup_trials=tune_config.startup_trials,
    )
    pruner = optuna.pruners.MedianPruner(
        n_startup_trials=tune_config.prune_after_trials,
        n_warmup_steps=tune_config.prune_warmup_epochs,
    )
    return optuna.load_study(study_name=plan.name, storage=storage, sampler=sampler, pruner=pruner)


def recover_stale_trials(config: Config, study) -> list[int]:
    """Trials left RUNNING by a process of this host that is gone (a killed tune): mark them
    failed, end their MLflow runs, and queue their params to be tried first."""
    from optuna.trial import TrialState

    retried = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        host, _, pid = str(trial.user_attrs.get(ATTR_WORKER, "")).rpartition(":")
        if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
            continue
        # Optuna has no public call to fail another process's trial; the storage does it.
        study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
        study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        _end_mlflow_run(config, trial.user_attrs.get(ATTR_RUN))
        retried.append(trial.number)
    return retried


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _end_mlflow_run(config: Config, run_id: str | None) -> None:
    if run_id is None:
        return
    from mlflow import MlflowClient

    from visionloop.tracking import configure_tracking

    configure_tracking(config)
    client = MlflowClient()
    if client.get_run(run_id).info.status == "RUNNING":
        client.set_tag(run_id, "optuna.state", "killed")
        client.set_terminated(run_id, status="KILLED")


def parent_run(config: Config, study) -> str:
    """The study's parent MLflow run (created with the study, continued on resume)."""
    import mlflow

    existing = study.user_attrs.get(ATTR_PARENT)
    tags = {"optuna.study": study.study_name, "kind": "tune"}
    with start_run(config, existing, run_name("tune", data=study.study_name), tags=tags) as run:
        run_id = run.info.run_id
        mlflow.log_params(
            {"tune.study": study.study_name, "tune.metric": config.train.early_stopping.monitor}
        )
    if run_id != existing:
        study.set_user_attr(ATTR_PARENT, run_id)
    return run_id


# ---- trials -----------------------------------------------------------------------------


def remaining(study, wanted: int) -> int:
    from optuna.trial import TrialState

    finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))
    return max(0, wanted - len(finished))


def run_trials(plan: StudyPlan, worker: int) -> None:
    """Run trials in this process until the study has enough or the time is up."""
    import optuna
    from optuna.study import MaxTrialsCallback
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna_study(plan, seed_offset=worker)
    left = remaining(study, plan.trials)
    if left == 0:
        return
    # MaxTrialsCallback stops every worker once the study as a whole has enough.
    enough = MaxTrialsCallback(plan.trials, states=(TrialState.COMPLETE, TrialState.PRUNED))
    study.optimize(
        lambda trial: objective(plan, trial),
        n_trials=left,
        timeout=plan.timeout,
        callbacks=[enough],
        catch=(VisionloopError,),
        gc_after_trial=True,
    )


def run_in_workers(plan: StudyPlan, workers: int) -> None:
    """N processes, each running trials of the one study; torch threads split among them."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_worker_main, args=(plan, index, workers), name=f"tune-{index}")
        for index in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join()
    failed = [p.name for p in processes if p.exitcode != 0]
    if failed:
        raise VisionloopError(
            f"tune worker(s) {', '.join(failed)} failed; see their messages above, then run "
            "the same command again to continue the study"
        )


def _worker_main(plan: StudyPlan, index: int, workers: int) -> None:
    import torch

    from visionloop.env import apply_offline_defaults

    apply_offline_defaults()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    run_trials(plan, index)


def objective(plan: StudyPlan, trial) -> float:
    """Train with the trial's params; report every epoch's metric; the best epoch's value."""
    import optuna

    from visionloop.training.engine import TrainingStopped, train

    config = plan.config
    values = suggest(trial, require_space(config))
    trial.set_user_attr(ATTR_WORKER, f"{socket.gethostname()}:{os.getpid()}")
    folder = config.tune.dir / TRIALS_DIR / f"{trial.number:04d}"
    trial_config = with_values(config, values, trial_overrides(config, folder))
    monitor = trial_config.train.early_stopping.monitor
    try:
        summary = train(
            trial_config,
            resume="never",
            on_epoch=lambda epoch, metrics: report_epoch(trial, epoch, metrics[monitor]),
            run_name=run_name("tune", trial=trial.number),
            parent_run_id=plan.parent_run_id,
        )
    except TrainingStopped as stopped:
        raise optuna.TrialPruned(str(stopped)) from None
    finally:
        shutil.rmtree(trial_config.train.checkpoint_dir, ignore_errors=True)
    tag_trial_run(config, summary["run_id"], "complete", trial.number)
    return float(summary[monitor])


def trial_overrides(config: Config, folder: Path) -> dict[str, Any]:
    """Each trial's own folders; no mlflow.pytorch model (trials are compared, not served)."""
    train: dict[str, Any] = {
        "dir": str(folder / "candidate"),
        "checkpoint_dir": str(folder / "checkpoints"),
        "log_model": False,
    }
    if config.tune.epochs is not None:
        train["epochs"] = config.tune.epochs
    return {"train": train}


def report_epoch(trial, epoch: int, value: float) -> None:
    """The epoch callback: tell the pruner, and stop the training run if it says so."""
    import mlflow

    from visionloop.training.engine import TrainingStopped

    if epoch == 1:
        run_id = mlflow.active_run().info.run_id
        trial.set_user_attr(ATTR_RUN, run_id)
        mlflow.set_tags({"optuna.study": trial.study.study_name, "optuna.trial": trial.number})
    trial.report(value, epoch)
    if trial.should_prune():
        mlflow.set_tags({"optuna.state": "pruned", "optuna.pruned_after_epoch": epoch})
        raise TrainingStopped(f"pruned after epoch {epoch} ({value:.4g} behind the median)")


def tag_trial_run(config: Config, run_id: str, state: str, number: int) -> None:
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_tag(run_id, "optuna.state", state)
    client.set_tag(run_id, "optuna.trial", str(number))


# ---- the outcome ------------------------------------------------------------------------


def summarise(config: Config, study, space) -> dict[str, Any]:
    """study.json (every trial), best_params.yaml (the patch) and the parent run's record."""
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False)
    counts = {
        state: sum(1 for t in trials if t.state.name.lower() == state)
        for state in ("complete", "pruned", "fail", "running")
    }
    rows = [_trial_row(t) for t in trials]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    best = study.best_trial if complete else None
    outcome: dict[str, Any] = {
        "study": study.study_name,
        "metric": config.train.early_stopping.monitor,
        "direction": study.direction.name.lower(),
        "trials": counts,
        "best_trial": best.number if best else None,
        "best_value": best.value if best else None,
        "best_params": {k: _tidy(v) for k, v in best.params.items()} if best else {},
    }
    config.tune.dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config.tune.dir / STUDY_JSON, {**outcome, "trial_table": rows})
    if best is not None:
        write_best_params(config.tune.dir / BEST_PARAMS, outcome)
    log_to_parent(config, study, outcome)
    return outcome


def write_best_params(path: Path, outcome: dict[str, Any]) -> None:
    import yaml

    header = (
        f"# study {outcome['study']}: trial {outcome['best_trial']}, "
        f"{outcome['metric']} {outcome['best_value']:.6g} ({outcome['direction']})\n"
    )
    body = yaml.safe_dump(nested(outcome["best_params"]), sort_keys=False)
    write_text_atomic(path, header + body)


def log_to_parent(config: Config, study, outcome: dict[str, Any]) -> None:
    import mlflow

    with start_run(config, study.user_attrs[ATTR_PARENT], run_name("tune", data=study.study_name)):
        mlflow.set_tags({f"trials.{k}": str(v) for k, v in outcome["trials"].items()})
        if outcome["best_trial"] is not None:
            mlflow.set_tag("best_trial", str(outcome["best_trial"]))
            mlflow.log_metric(f"best_{outcome['metric']}", outcome["best_value"])
            mlflow.log_artifact(str(config.tune.dir / BEST_PARAMS))
        mlflow.log_artifact(str(config.tune.dir / STUDY_JSON))


def _trial_row(trial) -> dict[str, Any]:
    epochs = max(trial.intermediate_values, default=0)
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "value": trial.value,
        "epochs": epochs,
        "params": trial.params,
        "mlflow_run_id": trial.user_attrs.get(ATTR_RUN),
        "retry_of": trial.user_attrs.get("retry_of"),
    }


def _tidy(value: Any) -> Any:
    """Floats to 6 significant digits: a patch a person reads (the search is not that fine)."""
    return float(f"{value:.6g}") if isinstance(value, float) else value
