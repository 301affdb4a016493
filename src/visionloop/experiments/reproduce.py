"""`visionloop reproduce --version N`: rebuild a registered version from its lineage, compare.

A version records (promotion.registry.registration_tags, training.mlflow_run.lineage_tags)
the git commit, the data version (data/raw's DVC hash, the split table's hashes), the seed,
hashes of params.yaml and dvc.lock, and the torch build. Reproducing checks the commit out
into a temporary folder, restores that data version there from the DVC cache (else the
remote), runs prepare and train with the commit's params, and compares the new weights with
the registered ones tensor by tensor: bit-identical, or equal validation metrics, or not,
with the recorded differences that explain it. A one-line verdict and a markdown report.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from visionloop.atomic import write_json_atomic, write_text_atomic
from visionloop.config import Config, load_config
from visionloop.data.versioning import DataVersionMissing, restore_into
from visionloop.errors import VisionloopError, first_line
from visionloop.tracking import run_name

# The metrics both runs record for their best epoch (the registered run as best_<name>).
COMPARED = ("val_accuracy", "val_f1_macro", "val_min_recall", "val_loss")
WEIGHTS = "weights.pt"


class NoSuchVersion(VisionloopError):
    exit_code = 2


class CannotReproduce(VisionloopError):
    """The lineage points at something that is gone: an unknown commit, lost data."""


@dataclass
class Outcome:
    version: str
    verdict: str  # identical | metrics_equal | different
    line: str
    metrics: dict[str, tuple[float | None, float | None]] = field(default_factory=dict)
    tensors: int = 0
    tensors_differing: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    lineage: dict[str, str] = field(default_factory=dict)
    report: str = ""

    @property
    def reproduced(self) -> bool:
        return self.verdict in ("identical", "metrics_equal")


def reproduce(config: Config, version: str) -> Outcome:
    from visionloop.promotion.registry import registry_client

    client = registry_client(config)
    model_version = _version(client, config.registry.model_name, version)
    tags = dict(model_version.tags)
    registered_run = client.get_run(model_version.run_id)
    repo_root = _git_root(config.root)
    commit = require_commit(repo_root, tags, version)
    workspace = Path(tempfile.mkdtemp(prefix=f"visionloop-reproduce-v{version}-"))
    try:
        project = checkout(repo_root, commit, workspace) / config.root.relative_to(repo_root)
        try:
            restore_into(config.root, project, data_targets(config, project))
        except DataVersionMissing as exc:
            raw = tags.get("data.raw_md5", "unrecorded")
            raise CannotReproduce(f"v{version} (data/raw {raw}): {exc}") from None
        # Before retraining: that points MLflow at the checkout's own store.
        registered = download_bundle(client, model_version.run_id, workspace / "registered")
        retrained = retrain(project, version)
        outcome = compare(version, registered, retrained, registered_run, tags, project)
    finally:
        if not config.reproduce.keep_workspace:
            shutil.rmtree(workspace, ignore_errors=True)
    outcome.report = str(write_report(config, outcome))
    return outcome


def _version(client, name: str, version: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise NoSuchVersion(
                f"{name} has no version {version} (`visionloop models list` shows them)"
            ) from None
        raise


# ---- lineage ----------------------------------------------------------------------------


def _git(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["git", "-C", str(folder), *args], capture_output=True, text=True, timeout=120
    )


def _git_root(folder: Path) -> Path:
    done = _git(folder, "rev-parse", "--show-toplevel")
    if done.returncode != 0:
        raise CannotReproduce(f"{folder} is not a git repository; reproduce needs its history")
    return Path(done.stdout.strip())


def require_commit(repo_root: Path, tags: dict[str, str], version: str) -> str:
    commit = tags.get("git.commit", "unknown")
    if commit == "unknown":
        raise CannotReproduce(f"v{version} records no git commit, so it cannot be rebuilt")
    if _git(repo_root, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
        raise CannotReproduce(
            f"v{version} was built from commit {commit[:12]}, which {repo_root} does not have "
            "(fetch it from the repository it was pushed to)"
        )
    return commit


def checkout(repo_root: Path, commit: str, workspace: Path) -> Path:
    """A clone of the repository at `commit` (objects shared, nothing copied); its root."""
    target = workspace / "checkout"
    for args in (
        ("clone", "-q", "--shared", "--no-checkout", str(repo_root), str(target)),
        ("-C", str(target), "checkout", "-q", "--detach", commit),
    ):
        done = subprocess.run(["git", *args], capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise CannotReproduce(f"git {args[0]} failed: {done.stderr.strip()[:300]}")
    return target


def data_targets(config: Config, project: Path) -> list[str]:
    """data/raw's .dvc file and the split stage's outputs, as the commit records them."""
    raw = config.data.raw_dir
    dvc_file = raw.with_name(raw.name + ".dvc").relative_to(config.root)
    if not (project / dvc_file).exists():
        raise CannotReproduce(f"the commit has no {dvc_file}: its data was not under DVC")
    return [str(dvc_file), "split"]


# ---- retraining and comparing -----------------------------------------------------------


def retrain(project: Path, version: str) -> dict[str, Any]:
    """prepare and train in the checkout with its own params (its own tracking store, unless
    MLFLOW_TRACKING_URI points elsewhere: then the run is there, named `reproduce vN`)."""
    from visionloop.pipeline.stages import run_stage
    from visionloop.training.engine import train

    config = load_config(project / "params.yaml")
    run_stage("prepare", config)
    summary = train(config, resume="never", run_name=run_name("reproduce", version=version))
    return {**summary, "config": config}


def download_bundle(client, run_id: str, folder: Path) -> Path:
    """The bundle its training run logged (the weights as trained, before any export)."""
    from mlflow.exceptions import MlflowException

    folder.mkdir(parents=True, exist_ok=True)
    try:
        local = Path(client.download_artifacts(run_id, "bundle", str(folder)))
    except (MlflowException, OSError) as exc:
        raise CannotReproduce(
            f"run {run_id} holds no training bundle to compare with ({first_line(exc)}); "
            "only versions registered from a training run can be reproduced"
        ) from None
    if not (local / WEIGHTS).exists():
        raise CannotReproduce(f"run {run_id}'s bundle has no {WEIGHTS} to compare with")
    return local


def compare(
    version: str,
    registered: Path,
    retrained: dict[str, Any],
    registered_run,
    tags: dict[str, str],
    project: Path,
) -> Outcome:
    import torch

    old = torch.load(registered / WEIGHTS, map_location="cpu", weights_only=True)
    new = torch.load(Path(retrained["bundle"]) / WEIGHTS, map_location="cpu", weights_only=True)
    differing = sorted(
        key
        for key in set(old) | set(new)
        if key not in old or key not in new or not torch.equal(old[key], new[key])
    )
    recorded = registered_run.data.metrics
    metrics = {name: (recorded.get(f"best_{name}"), retrained.get(name)) for name in COMPARED}
    metrics_equal = all(a is not None and a == b for a, b in metrics.values())
    reasons = differences(tags, registered_run, retrained, project)
    if not differing:
        verdict = "identical"
        line = f"v{version} reproduced: bit-identical weights ({len(old)} tensors), equal metrics"
    elif metrics_equal:
        verdict = "metrics_equal"
        line = (
            f"v{version} reproduced: equal metrics, {len(differing)} of {len(old)} weight "
            f"tensors differ ({_because(reasons)})"
        )
    else:
        verdict = "different"
        changed = [f"{k} {a} -> {b}" for k, (a, b) in metrics.items() if a != b]
        line = f"v{version} NOT reproduced: {', '.join(changed)} ({_because(reasons)})"
    return Outcome(
        version=version,
        verdict=verdict,
        line=line,
        metrics=metrics,
        tensors=len(old),
        tensors_differing=differing,
        reasons=reasons,
        lineage={k: v for k, v in tags.items() if k.split(".")[0] in LINEAGE_PREFIXES},
    )


LINEAGE_PREFIXES = ("git", "data", "lineage", "train", "env", "bundle_sha256")


def _because(reasons: list[str]) -> str:
    if not reasons:
        return "no recorded difference explains it: see the report"
    return "; ".join(reasons)


def differences(
    tags: dict[str, str], registered_run, retrained: dict[str, Any], project: Path
) -> list[str]:
    """What differs between how the version was built and this rebuild, as far as recorded."""
    import torch

    from visionloop.training.mlflow_run import data_version

    config: Config = retrained["config"]
    reasons = []
    if tags.get("env.torch") and tags["env.torch"] != torch.__version__:
        reasons.append(f"torch {tags['env.torch']} built it, this is torch {torch.__version__}")
    device = registered_run.data.params.get("device")
    new_device = str(config.train.device if config.train.device != "auto" else "")
    if device and device != "cpu":
        reasons.append(f"it was trained on {device}, rebuilt on {new_device or 'this machine'}")
    if tags.get("git.dirty") == "true":
        reasons.append("it was trained from a tree with uncommitted changes")
    for name in ("params.yaml", "dvc.lock"):
        recorded = tags.get(f"lineage.{name.replace('.', '_')}_sha256")
        path = project / name
        if recorded and path.exists() and hashlib.sha256(path.read_bytes()).hexdigest() != recorded:
            reasons.append(f"{name} at the commit differs from the one it was trained with")
    now = data_version(config)
    for key in ("data.raw_md5", "data.split_sha256"):
        if tags.get(key) and now.get(key) != tags[key]:
            reasons.append(f"{key} is {now.get(key)}, the version records {tags[key]}")
    return reasons


# ---- the report -------------------------------------------------------------------------


def write_report(config: Config, outcome: Outcome) -> Path:
    stem = config.reproduce.dir / f"{config.registry.model_name}-v{outcome.version}"
    write_json_atomic(
        stem.with_suffix(".json"),
        {
            "version": outcome.version,
            "verdict": outcome.verdict,
            "line": outcome.line,
            "metrics": {
                k: {"registered": a, "rebuilt": b} for k, (a, b) in outcome.metrics.items()
            },
            "tensors": outcome.tensors,
            "tensors_differing": outcome.tensors_differing,
            "reasons": outcome.reasons,
            "lineage": outcome.lineage,
        },
    )
    path = stem.with_suffix(".md")
    write_text_atomic(path, report_markdown(config, outcome))
    return path


def report_markdown(config: Config, outcome: Outcome) -> str:
    lines = [
        f"# Reproducing {config.registry.model_name} v{outcome.version}",
        "",
        f"**{outcome.line}**",
        "",
        "## Metrics (best epoch, validation split)",
        "",
        "| metric | registered | rebuilt | equal |",
        "|---|---|---|---|",
    ]
    for name, (old, new) in outcome.metrics.items():
        lines.append(f"| {name} | {old} | {new} | {'yes' if old == new else 'no'} |")
    lines += [
        "",
        "## Weights",
        "",
        f"{outcome.tensors - len(outcome.tensors_differing)} of {outcome.tensors} tensors "
        "bit-identical.",
    ]
    if outcome.tensors_differing:
        lines.append("Differing: " + ", ".join(f"`{k}`" for k in outcome.tensors_differing[:20]))
    lines += ["", "## Recorded differences", ""]
    lines += [f"- {r}" for r in outcome.reasons] or ["- none: same commit, data, params, torch"]
    lines += ["", "## Lineage", "", "| tag | value |", "|---|---|"]
    lines += [f"| {k} | `{v}` |" for k, v in sorted(outcome.lineage.items())]
    return "\n".join(lines) + "\n"
