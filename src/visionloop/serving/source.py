"""Which model to use and how to load it: a registry URI or a bundle folder, checked whole.

- `models:/NAME@ALIAS` or `models:/NAME/VERSION`: resolved in the registry (`resolve`), then
  downloaded; the bundle's files must hash to the version's `bundle_sha256` tag and each
  ONNX file to its tag, else the version is refused (`IntegrityError`).
- a folder holding a bundle (`model.json`, `weights.pt`): loaded as it is.

Then the runtime is chosen (`choose_runtime`), built, and given a smoke prediction on a few
real test images: a model that answers NaN or rows that do not sum to 1 is refused too.
"""

from __future__ import annotations

import re
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from visionloop.artifacts import exports
from visionloop.artifacts.bundle import BundleDamaged, BundleMeta, bundle_digest, is_bundle
from visionloop.artifacts.exports import ExportReport, report_from_tags
from visionloop.config import Config
from visionloop.errors import VisionloopError, first_line
from visionloop.images import fit_batch
from visionloop.serving.runtimes import OnnxRuntime, Runtime, TorchRuntime

URI_PATTERN = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[\w-]+)|/(?P<version>\d+))$")


class RegistryUnavailable(VisionloopError):
    """The registry could not be asked (server down, database unreadable)."""


class ModelRefused(VisionloopError):
    """A model was found but must not be used: integrity or smoke check failed."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check  # integrity | smoke | runtime


@dataclass(frozen=True)
class ModelRef:
    """What a URI names right now: a registered version, or a bundle folder."""

    uri: str
    name: str
    version: str | None = None  # None for a bundle folder
    alias: str | None = None  # set when the URI follows an alias
    run_id: str | None = None
    tags: dict[str, str] = field(default_factory=dict)
    path: Path | None = None  # a bundle folder

    @property
    def label(self) -> str:
        return f"{self.name} v{self.version}" if self.version else str(self.path)


@dataclass(frozen=True)
class LoadedModel:
    ref: ModelRef
    runtime: Runtime
    bundle_sha256: str
    report: ExportReport | None
    runtime_reason: str  # why this runtime (auto's choice, or as asked)
    loaded_at: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    @property
    def meta(self) -> BundleMeta:
        return self.runtime.meta

    @property
    def version(self) -> str:
        return self.ref.version or "local"

    def describe(self) -> dict[str, Any]:
        meta = self.meta
        return {
            "name": self.ref.name,
            "version": self.version,
            "alias": self.ref.alias,
            "uri": self.ref.uri,
            "bundle_sha256": self.bundle_sha256,
            "arch": meta.arch,
            "classes": list(meta.classes),
            "input_size": [meta.image_size, meta.image_size],
            "resize": meta.resize,
            "tta": getattr(meta, "tta", "none"),
            "runtime": self.runtime.name,
            "runtime_reason": self.runtime_reason,
            "loaded_at": self.loaded_at,
            "exports": exports_summary(self.report),
        }


def exports_summary(report: ExportReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    return {
        "onnx": report.status,
        "faithful": report.faithful,
        "max_prob_diff": report.max_prob_diff,
        "argmax_agreement": report.argmax_agreement,
        "torch_top1": report.torch_top1,
        "int8": report.int8,
        "int8_top1": report.int8_top1,
        "int8_drop": report.int8_drop,
    }


def default_uri(config: Config) -> str:
    return config.serving.model or f"models:/{config.registry.model_name}@champion"


# ---- resolving -----------------------------------------------------------------------------


def resolve(config: Config, uri: str) -> ModelRef:
    """The version (or folder) a URI names now; a one-line error when there is none."""
    match = URI_PATTERN.match(uri)
    if match is None:
        return bundle_ref(uri)
    from mlflow.exceptions import MlflowException

    from visionloop.promotion.registry import alias_version, registry_client, require_version

    name, alias, version = match["name"], match["alias"], match["version"]
    try:
        client = registry_client(config)
        if alias is not None:
            found = alias_version(client, name, alias)
            if found is None:
                raise VisionloopError(
                    f"{name} has no @{alias} version yet; promote one "
                    "(`visionloop models register`) or pass --model models:/NAME/VERSION"
                )
        else:
            require_version(client, name, version)
            found = client.get_model_version(name, version)
    except VisionloopError:
        raise
    except MlflowException as exc:
        raise RegistryUnavailable(f"the registry did not answer for {uri}: {exc.message}") from None
    except Exception as exc:  # the stores raise SQLAlchemy, requests and OS errors alike
        raise RegistryUnavailable(
            f"the registry did not answer for {uri}: {type(exc).__name__}: {first_line(exc)}"
        ) from None
    return ModelRef(
        uri, name, str(found.version), alias, found.run_id, dict(found.tags or {}), None
    )


def bundle_ref(text: str) -> ModelRef:
    path = Path(text).expanduser()
    if not is_bundle(path):
        raise VisionloopError(
            f"{text}: neither a bundle folder (model.json, weights.pt) nor a registry URI "
            "(models:/NAME@ALIAS or models:/NAME/VERSION)"
        )
    return ModelRef(text, path.resolve().name, path=path.resolve())


# ---- choosing a runtime ----------------------------------------------------------------------


def choose_runtime(requested: str, ref: ModelRef, report: ExportReport | None) -> tuple[str, str]:
    """(runtime, why). auto: int8 when usable, else ONNX fp32 when faithful, else torch."""
    if requested == "torch":
        return "torch", "as asked"
    if ref.path is not None:  # a bundle folder has no exports: ONNX is exported on the spot
        if requested == "int8":
            raise VisionloopError(
                f"{ref.label}: int8 needs a registered version (it is quantised and checked at "
                "registration); use --runtime onnx or torch"
            )
        return ("onnx", "as asked") if requested == "onnx" else ("torch", "a bundle folder")
    if report is None or report.status != exports.OK:
        why = "registered without ONNX exports" if report is None else report.detail
        if requested in ("onnx", "int8"):
            raise VisionloopError(f"{ref.label} has no ONNX export ({why}); use --runtime torch")
        return "torch", f"no ONNX export ({why})"
    if requested == "int8" and not report.int8_usable:
        raise VisionloopError(
            f"{ref.label}: its int8 model is {report.int8} ({report.int8_detail}); "
            "use --runtime onnx or torch"
        )
    if requested == "onnx" and not report.fp32_usable:
        raise VisionloopError(
            f"{ref.label}: its ONNX export differs from torch by {report.max_prob_diff:.2g} "
            "(above serving.export.max_prob_diff); use --runtime torch"
        )
    if requested != "auto":
        return requested, "as asked"
    if report.int8_usable:
        return "int8", f"int8 usable ({report.int8_detail})"
    if report.fp32_usable:
        return "onnx", f"ONNX faithful; int8 {report.int8} ({report.int8_detail})"
    return "torch", f"ONNX not faithful (max prob diff {report.max_prob_diff:.2g})"


# ---- loading -------------------------------------------------------------------------------


def load_model(config: Config, ref: ModelRef, runtime: str | None = None) -> LoadedModel:
    """Download (registry) or read (folder), verify, build the runtime, smoke-test it."""
    report = report_from_tags(ref.tags) if ref.version else None
    name, why = choose_runtime(runtime or config.serving.runtime, ref, report)
    with tempfile.TemporaryDirectory(prefix="visionloop-model-") as folder:
        work = Path(folder)
        try:
            bundle_dir, digest = local_bundle(config, ref)
            built = build_runtime(name, ref, report, bundle_dir, work)
        except (OSError, RuntimeError, ValueError, KeyError, BundleDamaged) as exc:
            raise ModelRefused("load", f"{ref.label} could not be loaded: {exc}") from None
    smoke_check(config, built, ref)
    return LoadedModel(ref, built, digest, report, why)


def local_bundle(config: Config, ref: ModelRef) -> tuple[Path, str]:
    """The bundle folder on disk and its digest, checked against the version's tag (a
    registered version's copy kept on this machine: promotion.version_cache)."""
    if ref.path is not None:
        return ref.path, bundle_digest(ref.path)
    from mlflow.exceptions import MlflowException

    from visionloop.promotion.pyfunc import download_checked
    from visionloop.promotion.registry import DIGEST_TAG

    try:
        _, bundle_dir, digest = download_checked(
            config.registry, ref.name, ref.version, ref.tags.get(DIGEST_TAG)
        )
    except MlflowException as exc:
        raise ModelRefused(
            "download", f"{ref.label}: its files could not be downloaded: {exc.message}"
        ) from None
    except BundleDamaged as exc:
        raise ModelRefused("integrity", str(exc)) from None
    return bundle_dir, digest


def build_runtime(
    name: str, ref: ModelRef, report: ExportReport | None, bundle_dir: Path, work: Path
) -> Runtime:
    from visionloop.models.classifier import load_bundle

    classifier = load_bundle(bundle_dir)
    if name == "torch":
        return TorchRuntime(classifier)
    if ref.path is not None:
        from visionloop.serving.export import export_fp32

        path = export_fp32(classifier, work / exports.FP32_FILE)
    else:
        path = download_export(ref, report, name, work / "exports")
    return OnnxRuntime(name, path, classifier.meta)


def download_export(ref: ModelRef, report: ExportReport, runtime: str, target: Path) -> Path:
    import mlflow.artifacts

    from visionloop.serving.export import sha256_file

    file, expected = (
        (exports.INT8_FILE, report.int8_sha256)
        if runtime == "int8"
        else (exports.FP32_FILE, report.fp32_sha256)
    )
    from mlflow.exceptions import MlflowException

    try:
        path = Path(
            mlflow.artifacts.download_artifacts(
                run_id=ref.run_id,
                artifact_path=f"{report.artifact_path}/{file}",
                dst_path=str(target),
            )
        )
    except MlflowException as exc:
        raise ModelRefused(
            "download", f"{ref.label}: its {file} could not be downloaded: {exc.message}"
        ) from None
    if sha256_file(path) != expected:
        raise ModelRefused(
            "integrity",
            f"{ref.label}: its {file} does not match the sha256 recorded at registration",
        )
    return path


def smoke_check(config: Config, runtime: Runtime, ref: ModelRef) -> None:
    """A few real test images (grey ones without a prepared split) must get sane answers."""
    from visionloop.promotion.registry import implausible_probabilities, smoke_images

    meta = runtime.meta
    images = fit_batch(smoke_images(config), meta.image_size, meta.resize)
    try:
        probs = runtime.predict_proba(images)
    except (RuntimeError, ValueError) as exc:
        raise ModelRefused("smoke", f"{ref.label} failed its smoke prediction: {exc}") from None
    problem = implausible_probabilities(np.asarray(probs), len(images))
    if problem:
        raise ModelRefused("smoke", f"{ref.label} failed its smoke prediction: {problem}")
