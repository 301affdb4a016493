"""The MLflow Model Registry side: register candidates, move aliases on evidence, audit, roll back.

Aliases only (`champion`, `challenger`), never the deprecated stages. The life of a version:

1. `register_candidate`: the candidate bundle becomes a new version tagged `gate=pending`
   (with its bundle hash, metrics, data fingerprints and git commit); `challenger` points at
   it. Registering the same bundle twice reuses its version.
2. `promote_if_passed`: the gate's verdict is recorded on the version (`gate=passed` or
   `failed`, one tag per rule, the report kept beside the audit log); `champion` moves only to
   a `gate=passed` version, after a smoke prediction of the registered model.
3. A crash between 1 and 2 leaves the champion untouched and the version pending; the next
   `register_and_promote` finishes it (same bundle) or marks it `gate=abandoned` (a newer
   candidate replaced it, so its verdict is gone).

Every alias move is appended to `registry.dir/audit.jsonl` and kept as a tag
`audit.NNNNNN` on the version the alias moved to (the copy every user of the tracking server
sees; rollback reads it). Per version, not on the registered model: the model's tags stay a
handful however many moves there were (registries made before keep theirs on the model and
are read from there too). These are plain functions, so the CLI and Prefect tasks can both
call them.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.artifacts import candidate, raw_store
from visionloop.artifacts.bundle import BundleDamaged, bundle_digest
from visionloop.artifacts.evaluation import evaluation_of
from visionloop.artifacts.prepared import open_prepared_split
from visionloop.artifacts.verdict import (
    ALREADY_CHAMPION,
    VERDICT_JSON,
    VERDICT_MD,
    format_value,
    read_verdict,
)
from visionloop.atomic import write_text_atomic
from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.locking import AlreadyRunning, exclusive
from visionloop.tracking import (
    RUN_NAME_TAG,
    configure_tracking,
    git_state,
    git_tags,
    run_name,
    start_run,
)
from visionloop.training import mlflow_run

log = logging.getLogger(__name__)

CHAMPION = "champion"
CHALLENGER = "challenger"
GATE_TAG = "gate"
PENDING, PASSED, FAILED, ABANDONED = "pending", "passed", "failed", "abandoned"
DIGEST_TAG = "bundle_sha256"
AUDIT_FILE = "audit.jsonl"
LOCK_FILE = "registry.lock"
AUDIT_TAG_PREFIX = "audit."
VERDICTS_DIR = "verdicts"
SMOKE_IMAGES = 8
MAX_TAG_LENGTH = 5000  # MLflow's limit on a tag value


def registry_client(config: Config):
    """Point MLflow at the configured store (once per user action) and return a client."""
    from mlflow import MlflowClient

    configure_tracking(config)
    return MlflowClient()


def alias_version(client, name: str, alias: str):
    """The ModelVersion an alias points at, or None (no such model or alias)."""
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            return None
        raise


def all_versions(client, name: str) -> list:
    versions = client.search_model_versions(f"name='{name}'")
    return sorted(versions, key=lambda mv: int(mv.version))


def registered_model(client, name: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def ensure_registered_model(client, name: str) -> None:
    if registered_model(client, name) is None:
        client.create_registered_model(
            name, description="visionloop image classifier (aliases: champion, challenger)"
        )


# ---- loading registered versions -------------------------------------------------------


def load_version_pyfunc(config: Config, version: str, client=None, fresh: bool = False):
    """A registered version as any MLflow user loads it, once its bundle's files hash to its
    `bundle_sha256` tag (BundleDamaged, one line, when they do not). From the copy kept on
    this machine when it passes that check; `fresh`: the registry's own copy must pass too."""
    import mlflow.pyfunc

    from visionloop.promotion.pyfunc import download_checked

    client = client or registry_client(config)
    name = config.registry.model_name
    expected = client.get_model_version(name, version).tags.get(DIGEST_TAG)
    folder, _, _ = download_checked(config.registry, name, version, expected, fresh)
    return mlflow.pyfunc.load_model(str(folder))


@dataclass(frozen=True)
class Champion:
    version: str
    bundle_sha256: str
    classifier: Any  # visionloop.models.classifier.Classifier


def load_champion(config: Config) -> Champion | None:
    """The model `@champion` points at, loaded as any MLflow user would; None when none."""
    client = registry_client(config)
    champion = alias_version(client, config.registry.model_name, CHAMPION)
    if champion is None:
        return None
    version = version_of(champion)
    try:
        model = load_version_pyfunc(config, version, client)
    except BundleDamaged as exc:
        raise VisionloopError(
            f"the champion is damaged ({exc}); the gate cannot compare against it: "
            "`visionloop rollback` to the previous good champion, or "
            "`visionloop promote --version N --reason ...`"
        ) from None
    classifier = model.unwrap_python_model().classifier
    return Champion(version, champion.tags.get(DIGEST_TAG, ""), classifier)


def smoke_test(config: Config, version: str) -> None:
    """Load a registered version as any MLflow user would, send it a few encoded images
    through its signature, and check the answer's sanity."""
    from mlflow.exceptions import MlflowException

    from visionloop.promotion.pyfunc import encoded_frame, output_probabilities

    images = smoke_images(config)
    # Fresh: an alias moves only to a version whose stored files every registry user will
    # download intact (BundleDamaged, before any load, when they are not).
    model = load_version_pyfunc(config, version, fresh=True)
    try:
        probs = output_probabilities(model.predict(encoded_frame(images)))
    except (MlflowException, OSError, RuntimeError, ValueError, KeyError) as exc:
        raise VisionloopError(f"v{version} failed its smoke prediction: {exc}") from None
    problem = implausible_probabilities(probs, len(images))
    if problem:
        raise VisionloopError(f"v{version} failed its smoke prediction: {problem}")


def implausible_probabilities(probs: np.ndarray, rows: int) -> str | None:
    """What is wrong with a model's answer to `rows` images, or None when it looks sane."""
    if probs.ndim != 2 or probs.shape[0] != rows or not np.all(np.isfinite(probs)):
        return f"bad output {probs.shape} (finite: {bool(np.all(np.isfinite(probs)))})"
    if not np.allclose(probs.sum(axis=1), 1.0, atol=1e-3):
        return "rows do not sum to 1"
    return None


def smoke_images(config: Config) -> np.ndarray:
    """A few real test images when the prepared split is there, else a grey batch."""
    try:
        return np.array(open_prepared_split(config.prepare.dir, "test").images[:SMOKE_IMAGES])
    except FileNotFoundError:
        return np.full((2, 32, 32, 3), 128, dtype=np.uint8)


# ---- registering ------------------------------------------------------------------------


def register_candidate(config: Config) -> str:
    """Register train.dir/model as a new `gate=pending` version (or reuse it); its version."""
    bundle_dir = candidate.require_bundle(config.train.dir)
    with one_change_at_a_time(config):
        return _register(registry_client(config), config, bundle_dir, bundle_digest(bundle_dir))


def _register(client, config: Config, bundle_dir: Path, digest: str) -> str:
    name = config.registry.model_name
    same = [mv for mv in all_versions(client, name) if mv.tags.get(DIGEST_TAG) == digest]
    version = version_of(same[-1]) if same else log_and_register(client, config, bundle_dir, digest)
    champion = alias_version(client, name, CHAMPION)
    current = alias_version(client, name, CHALLENGER)
    is_champion = version_of(champion) == version
    if not is_champion and version_of(current) != version:
        move_alias(client, config, CHALLENGER, version, "register", "new candidate registered")
    return version


def log_and_register(client, config: Config, bundle_dir: Path, digest: str) -> str:

    from visionloop.artifacts.exports import report_tags
    from visionloop.promotion.pyfunc import DIGEST_SETTING, log_bundle_model
    from visionloop.serving.export import log_exports

    evaluated = evaluation_of(config.evaluate.dir, digest)
    run_id = candidate.read_run_id(config.train.dir, digest)
    if run_id is None and evaluated:
        run_id = evaluated[1]
    with start_run(config, run_id, run_name("register")) as run:
        settings = {**pyfunc_settings(config), DIGEST_SETTING: digest}
        info = log_bundle_model(bundle_dir, smoke_images(config)[0], settings)
        exported = log_exports(config, bundle_dir, digest)
        mlflow_run.log_lineage_files(config)
        run_id = run.info.run_id
    ensure_registered_model(client, config.registry.model_name)
    # Tags go in with the version (one call), so a version is never seen without gate=pending.
    # The client's call, not mlflow.register_model: that one prints "already exists" every
    # time, since the registered model was created just above.
    version = version_of(
        client.create_model_version(
            config.registry.model_name,
            source=info.model_uri,
            run_id=info.run_id,
            tags={**registration_tags(config, digest, evaluated), **report_tags(exported)},
            model_id=info.model_id,
        )
    )
    # The training run, named for what it became: `train digits-003 v4`.
    name = run_name("train", mlflow_run.data_label(config), version=version)
    client.set_tag(run_id, RUN_NAME_TAG, name)
    return version


def pyfunc_settings(config: Config) -> dict[str, Any]:
    """The decode rules and default top-k the MLflow model applies wherever it is loaded."""
    from visionloop.serving.inputs import image_rules, rules_as_dict

    return {"image_rules": rules_as_dict(image_rules(config)), "top_k": config.serving.top_k}


def registration_tags(
    config: Config, digest: str, evaluated: tuple[dict[str, float], str] | None
) -> dict[str, str]:
    tags = {
        GATE_TAG: PENDING,
        DIGEST_TAG: digest,
        **mlflow_run.lineage_tags(config),
        **git_tags(git_state(config.root)),
    }
    if evaluated:
        tags.update({f"metric.{k}": f"{v:.6g}" for k, v in evaluated[0].items()})
    verdict = read_verdict(config.gate.dir)
    if verdict and verdict["candidate"]["bundle_sha256"] == digest:
        tags["data.test_set"] = verdict.get("test_set", {}).get("fingerprint", "")
        for key in ("top1", "f1_macro", "min_class_recall"):
            if verdict["candidate"].get(key) is not None:
                tags.setdefault(f"metric.{key}", f"{verdict['candidate'][key]:.6g}")
    manifest = config.data.raw_dir / raw_store.MANIFEST
    if manifest.exists():
        tags["data.manifest_sha256"] = hashlib.sha256(manifest.read_bytes()).hexdigest()
    return tags


# ---- the verdict and the champion ---------------------------------------------------------


def promote_if_passed(client, config: Config, version: str) -> dict[str, Any]:
    """Record the gate's verdict on `version`; move `champion` to it only if it passed."""
    name = config.registry.model_name
    verdict = read_verdict(config.gate.dir)
    if verdict is None:
        raise VisionloopError(
            f"{config.gate.dir / VERDICT_JSON}: no verdict; run `visionloop stage gate` first"
        )
    model_version = client.get_model_version(name, version)
    if model_version.tags.get(DIGEST_TAG) != verdict["candidate"]["bundle_sha256"]:
        raise VisionloopError(
            f"the verdict in {config.gate.dir} is for another model than v{version}; "
            "run `visionloop stage gate` again"
        )
    if verdict["mode"] == ALREADY_CHAMPION:
        return {"action": "none", "version": version, "summary": verdict["summary"]}
    done = already_applied(client, config, model_version, verdict)
    if done is not None:
        return done
    check_champion_unchanged(client, name, verdict)
    report = keep_report(config, version)
    record_verdict(client, name, version, verdict, report)
    if not verdict["passed"]:
        return {"action": "rejected", "version": version, "summary": verdict["summary"]}
    move_champion(client, config, version, "promote", verdict["summary"], report)
    return {"action": "promoted", "version": version, "summary": verdict["summary"]}


def already_applied(client, config: Config, model_version, verdict: dict[str, Any]):
    """The outcome when this verdict was applied to this version by an earlier run (a rerun
    of `models register` converges instead of failing on the champion it moved); else None.

    A version that passed its gate once keeps that record when the same bundle is judged
    again and fails (a retrain that reproduced an earlier champion, now beaten): rollback
    and `promote` may still return to it, and its evidence stays the one that promoted it."""
    name, version = config.registry.model_name, version_of(model_version)
    recorded = model_version.tags.get(GATE_TAG)
    if recorded == FAILED and not verdict["passed"]:
        return {"action": "rejected", "version": version, "summary": verdict["summary"]}
    if recorded == PASSED and not verdict["passed"]:
        summary = f"{verdict['summary']} (v{version} keeps the gate it passed before)"
        return {"action": "rejected", "version": version, "summary": summary}
    if recorded != PASSED or version_of(alias_version(client, name, CHAMPION)) != version:
        return None
    return {"action": "promoted", "version": version, "summary": verdict["summary"]}


def check_champion_unchanged(client, name: str, verdict: dict[str, Any]) -> None:
    judged = (verdict.get("champion") or {}).get("version")
    champion = alias_version(client, name, CHAMPION)
    now = version_of(champion)
    if judged != now:
        raise VisionloopError(
            f"the gate judged against champion {judged or '(none)'} but the champion is now "
            f"{now or '(none)'}; run `visionloop stage gate` again"
        )


def keep_report(config: Config, version: str) -> str:
    """Copy the verdict next to the audit log (gate.dir is overwritten by the next run)."""
    target_dir = config.registry.dir / VERDICTS_DIR
    stem = f"{config.registry.model_name}-v{version}"
    for source, suffix in ((VERDICT_JSON, ".json"), (VERDICT_MD, ".md")):
        text = (config.gate.dir / source).read_text()
        write_text_atomic(target_dir / f"{stem}{suffix}", text)
    return str(target_dir / f"{stem}.md")


def record_verdict(client, name: str, version: str, verdict: dict[str, Any], report: str) -> None:
    tags = {
        "gate.summary": verdict["summary"],
        "gate.mode": verdict["mode"],
        "gate.report": report,
        "gate.champion_version": str((verdict.get("champion") or {}).get("version")),
    }
    for rule_name, rule in verdict["rules"].items():
        tags[f"gate.rule.{rule_name}"] = (
            f"{'pass' if rule['passed'] else 'fail'}: {format_value(rule['value'])} "
            f"(threshold {format_value(rule['threshold'])})"
        )
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value[:MAX_TAG_LENGTH])
    # The decision tag last: a version reads `passed` only once its evidence is recorded.
    client.set_model_version_tag(name, version, GATE_TAG, PASSED if verdict["passed"] else FAILED)


def move_champion(
    client, config: Config, version: str, action: str, reason: str, report: str | None = None
) -> None:
    """`champion` -> version, only for a gate=passed version whose smoke prediction works."""
    name = config.registry.model_name
    gate_state = client.get_model_version(name, version).tags.get(GATE_TAG)
    if gate_state != PASSED:
        raise VisionloopError(
            f"v{version} is tagged gate={gate_state}; only a version that passed the gate can "
            "become champion"
        )
    smoke_test(config, version)
    move_alias(client, config, CHAMPION, version, action, reason, report)


def move_alias(
    client,
    config: Config,
    alias: str,
    version: str,
    action: str,
    reason: str,
    report: str | None = None,
) -> dict[str, Any]:
    name = config.registry.model_name
    previous = alias_version(client, name, alias)
    # The audit entry first, as the move's journal: a kill before the alias moves leaves an
    # entry whose move `finish_interrupted_moves` completes on the next registry action.
    before = version_of(previous)
    entry = record_move(client, config, alias, before, version, action, reason, report)
    client.set_registered_model_alias(name, alias, version)
    return entry


def finish_interrupted_moves(client, config: Config) -> list[str]:
    """Complete alias moves whose audit entry was written but whose alias was not moved (a
    kill in between): the alias still at the entry's from_version goes to its to_version.
    An alias found anywhere else was moved outside visionloop and is left alone."""
    name = config.registry.model_name
    last: dict[str, dict[str, Any]] = {}
    for entry in audit_entries(client, name):
        last[entry["alias"]] = entry
    finished = []
    for alias, entry in last.items():
        now = version_of(alias_version(client, name, alias))
        if now != entry["to_version"] and now == entry["from_version"]:
            client.set_registered_model_alias(name, alias, entry["to_version"])
            log.info("registry: finished the interrupted move of @%s to v%s", alias, now)
            finished.append(alias)
    return finished


def record_move(
    client,
    config: Config,
    alias: str,
    from_version: str | None,
    to_version: str,
    action: str,
    reason: str,
    report: str | None,
) -> dict[str, Any]:
    entry = {
        "time": datetime.now(UTC).isoformat(timespec="seconds"),
        "model": config.registry.model_name,
        "alias": alias,
        "action": action,
        "from_version": from_version,
        "to_version": to_version,
        "reason": reason,
        "report": report,
        "user": getpass.getuser(),
    }
    append_audit(client, config, entry)
    return entry


def append_audit(client, config: Config, entry: dict[str, Any]) -> None:
    name = config.registry.model_name
    entries = audit_entries(client, name)
    entry = {"seq": len(entries) + 1, **entry}
    line = json.dumps(entry, sort_keys=True)
    tag = f"{AUDIT_TAG_PREFIX}{entry['seq']:06d}"
    client.set_model_version_tag(name, entry["to_version"], tag, line)
    path = config.registry.dir / AUDIT_FILE
    existing = path.read_text() if path.exists() else ""
    write_text_atomic(path, existing + line + "\n")


def audit_entries(client, name: str) -> list[dict[str, Any]]:
    """The audit trail kept in the registry itself, oldest first: the versions' audit tags,
    and the registered model's (where registries made before 0.3 kept them)."""
    model = registered_model(client, name)
    if model is None:
        return []
    tags = [model.tags, *(mv.tags for mv in all_versions(client, name))]
    entries = {k: v for kept in tags for k, v in kept.items() if k.startswith(AUDIT_TAG_PREFIX)}
    return [json.loads(entries[k]) for k in sorted(entries)]


def champion_history(client, name: str) -> list[str]:
    """Champion versions as a stack: promotions push, rollbacks pop."""
    stack: list[str] = []
    for entry in audit_entries(client, name):
        if entry["alias"] != CHAMPION:
            continue
        if entry["action"] == "rollback":  # back to its target (damaged ones skipped)
            del stack[-1:]
            while stack and stack[-1] != entry["to_version"]:
                del stack[-1]
        else:
            stack.append(entry["to_version"])
    return stack


# ---- user actions -------------------------------------------------------------------------


def reconcile_pending(client, config: Config, current_digest: str) -> list[str]:
    """Versions left pending by an interrupted run for another bundle: mark them abandoned."""
    name = config.registry.model_name
    abandoned = []
    for mv in all_versions(client, name):
        if mv.tags.get(GATE_TAG) == PENDING and mv.tags.get(DIGEST_TAG) != current_digest:
            client.set_model_version_tag(
                name,
                version_of(mv),
                "gate.summary",
                "interrupted before its verdict was recorded, then replaced by a newer "
                "candidate; never gated",
            )
            client.set_model_version_tag(name, version_of(mv), GATE_TAG, ABANDONED)
            abandoned.append(version_of(mv))
    return abandoned


class RegistryBusy(AlreadyRunning):
    """Another register, promote or rollback of this project is moving aliases."""


def one_change_at_a_time(config: Config):
    """Registry changes of one project, one at a time (two concurrent registrations of one
    bundle would both create a version; two moves would interleave their audit entries)."""
    return exclusive(config.registry.dir / LOCK_FILE, "registry change", error=RegistryBusy)


def register_and_promote(config: Config) -> dict[str, Any]:
    """What the flow and `visionloop models register` run after the gate stage."""
    with one_change_at_a_time(config):
        return _register_and_promote(config)


def _register_and_promote(config: Config) -> dict[str, Any]:
    client = registry_client(config)
    finish_interrupted_moves(client, config)
    bundle_dir = candidate.require_bundle(config.train.dir)
    digest = bundle_digest(bundle_dir)
    abandoned = reconcile_pending(client, config, digest)
    version = _register(client, config, bundle_dir, digest)
    outcome = {**promote_if_passed(client, config, version), "abandoned": abandoned}
    log.info("registry: %s v%s of %s", outcome.get("action"), version, config.registry.model_name)
    return outcome


def promote(config: Config, version: str, reason: str) -> dict[str, Any]:
    """A manual, recorded promotion of a version that passed its gate."""
    if not reason.strip():
        raise VisionloopError("a manual promotion needs --reason saying why")
    with one_change_at_a_time(config):
        return _promote(config, version, reason)


def _promote(config: Config, version: str, reason: str) -> dict[str, Any]:
    client = registry_client(config)
    finish_interrupted_moves(client, config)
    name = config.registry.model_name
    require_version(client, name, version)
    champion = alias_version(client, name, CHAMPION)
    if version_of(champion) == version:
        raise VisionloopError(f"v{version} is already the champion")
    move_champion(client, config, version, "manual_promote", reason)
    return {"action": "promoted", "version": version, "from_version": version_of(champion)}


def rollback(config: Config, reason: str = "") -> dict[str, Any]:
    """Move `champion` back to the newest earlier champion that is intact and passes a smoke
    prediction; damaged ones are skipped (and named in the answer)."""
    with one_change_at_a_time(config):
        return _rollback(config, reason)


def _rollback(config: Config, reason: str = "") -> dict[str, Any]:
    client = registry_client(config)
    finish_interrupted_moves(client, config)
    name = config.registry.model_name
    champion = alias_version(client, name, CHAMPION)
    if champion is None:
        raise VisionloopError(f"{name} has no champion to roll back")
    history = champion_history(client, name)
    if not history or history[-1] != version_of(champion):
        raise VisionloopError(
            f"the champion alias (v{version_of(champion)}) was moved outside visionloop; "
            "use `visionloop promote --version N --reason ...` to choose one"
        )
    if len(history) < 2:
        raise VisionloopError(
            f"v{version_of(champion)} is the first champion; nothing to roll back to"
        )
    target, skipped = first_intact(config, history[-2::-1], version_of(champion))
    note = f" (skipped damaged {', '.join('v' + v for v in skipped)})" if skipped else ""
    move_alias(client, config, CHAMPION, target, "rollback", (reason or "rollback") + note)
    return {
        "action": "rolled_back",
        "from_version": version_of(champion),
        "to_version": target,
        "skipped": skipped,
    }


def first_intact(config: Config, candidates: list[str], champion: str) -> tuple[str, list[str]]:
    """The first of `candidates` (newest first) whose files are intact and whose smoke
    prediction works, and the damaged ones passed over; one line when none is left."""
    skipped, problems = [], []
    for version in dict.fromkeys(v for v in candidates if v != champion):
        try:
            smoke_test(config, version)
        except BundleDamaged as exc:
            log.info("rollback: skipping %s", exc)
            skipped.append(version)
            problems.append(str(exc))
            continue
        return version, skipped
    raise VisionloopError(
        f"no earlier champion of {config.registry.model_name} is intact to roll back to: "
        + "; ".join(problems)
    )


def require_version(client, name: str, version: str) -> None:
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(name, version)
    except MlflowException as exc:
        if exc.error_code in ("RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"):
            raise VisionloopError(f"{name} has no version {version}") from None
        raise


def version_of(model_version) -> str | None:
    """A version number as the string users type (MLflow hands back ints or strings)."""
    return str(model_version.version) if model_version is not None else None


def list_versions(config: Config) -> list[dict[str, Any]]:
    """Every version with its aliases, gate state, top-1 (with macro-F1 and the lowest class
    recall) and verdict summary, oldest first."""
    client = registry_client(config)
    name = config.registry.model_name
    model = registered_model(client, name)
    if model is None:
        return []
    aliases: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    return [
        {
            "version": version_of(mv),
            "aliases": sorted(aliases.get(version_of(mv), [])),
            "gate": mv.tags.get(GATE_TAG, ""),
            "top1": mv.tags.get("metric.top1"),
            "f1_macro": mv.tags.get("metric.f1_macro"),
            "min_class_recall": mv.tags.get("metric.min_class_recall"),
            "created": datetime.fromtimestamp(mv.creation_timestamp / 1000, UTC).isoformat(
                timespec="seconds"
            ),
            "summary": mv.tags.get("gate.summary", ""),
        }
        for mv in all_versions(client, name)
    ]
