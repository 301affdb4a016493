"""At registration: the bundle as ONNX fp32 and int8, each checked against torch on the test split.

1. `torch.onnx.export` (the dynamo exporter) with a dynamic batch dimension; the file's IR
   version is capped at what the installed onnxruntime loads, and the file is loaded back.
2. int8: onnxruntime static quantisation (QDQ, per-channel weights, MinMax calibration on
   training-cache images).
3. Both predict the prepared test split beside torch: the largest probability difference,
   argmax agreement and top-1 of each are recorded. fp32 is *faithful* within
   `serving.export.max_prob_diff`; int8 is *usable* only when its top-1 is at most
   `serving.max_int8_drop` below torch's.

The files and `exports.json` are logged into the version's run (`artifacts.exports`) and the
figures become version tags, so serving reads them from the registry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import tempfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np

from visionloop.artifacts import exports
from visionloop.artifacts.exports import ExportReport
from visionloop.artifacts.prepared import open_prepared_split
from visionloop.config import Config
from visionloop.errors import first_line
from visionloop.images import fit_batch
from visionloop.models.classifier import Classifier, load_bundle, model_input, predict_with
from visionloop.serving.runtimes import ONNX_INPUT, ONNX_OUTPUT, OnnxLogits

log = logging.getLogger(__name__)
# onnx 1.23 may write IR version 14; onnxruntime 1.31 loads at most 13. 10 is what the
# dynamo exporter writes for opset 20 and every onnxruntime since 1.16 reads.
MAX_IR_VERSION = 10
CHECK_BATCH = 256
SYNTHETIC_IMAGES = 32


def export_fp32(classifier: Classifier, path: Path) -> Path:
    """The network (normalised float32 NCHW in, logits out) as ONNX with a dynamic batch."""
    import onnx
    import torch

    size = classifier.meta.image_size
    example = torch.zeros(2, 3, size, size)  # batch 2: torch.export specialises 0 and 1
    program = torch.onnx.export(
        classifier.module.cpu().eval(),
        (example,),
        dynamo=True,
        input_names=[ONNX_INPUT],
        output_names=[ONNX_OUTPUT],
        dynamic_shapes=({0: torch.export.Dim("batch")},),
        verbose=False,
    )
    model = program.model_proto
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    onnx.save(model, str(path))
    return path


def quantize_int8(fp32_path: Path, calibration: np.ndarray, path: Path) -> Path:
    """Static QDQ int8 (uint8 activations, per-channel int8 weights), MinMax-calibrated."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            starts = range(0, len(calibration), CHECK_BATCH)
            self._batches = iter([{ONNX_INPUT: calibration[i : i + CHECK_BATCH]} for i in starts])

        def get_next(self):
            return next(self._batches, None)

    with _quiet_quantizer():
        quantize_static(
            str(fp32_path),
            str(path),
            Batches(),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    model = onnx.load(str(path))
    if model.ir_version > MAX_IR_VERSION:
        model.ir_version = MAX_IR_VERSION
        onnx.save(model, str(path))
    return path


@contextlib.contextmanager
def _quiet_quantizer() -> Iterator[None]:
    """The quantizer logs advice on the root logger ("consider pre-processing"): we measure
    the result instead (pre-processing cost 2-3 s per model and changed nothing measurable)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def check_images(config: Config, classifier: Classifier) -> tuple[np.ndarray, np.ndarray | None]:
    """The test split at the model's size (evenly spaced, at most max_check_images) and its
    labels; synthetic images and no labels when there is no prepared test split."""
    meta = classifier.meta
    try:
        split = open_prepared_split(config.prepare.dir, "test")
    except FileNotFoundError:
        rng = np.random.default_rng(0)
        shape = (SYNTHETIC_IMAGES, meta.image_size, meta.image_size, 3)
        return rng.integers(0, 256, shape, dtype=np.uint8), None
    index = evenly_spaced(len(split), config.serving.export.max_check_images)
    images = fit_batch(np.array(split.images[index]), meta.image_size, meta.resize)
    return images, split.labels[index]


def calibration_inputs(config: Config, classifier: Classifier) -> np.ndarray | None:
    """Normalised float32 training-cache images for int8 calibration; None without a cache."""
    meta = classifier.meta
    try:
        split = open_prepared_split(config.prepare.dir, "train")
    except FileNotFoundError:
        return None
    if len(split) == 0:
        return None
    index = evenly_spaced(len(split), config.serving.export.calibration_images)
    images = fit_batch(np.array(split.images[index]), meta.image_size, meta.resize)
    return model_input(images, meta).numpy()


def evenly_spaced(total: int, limit: int) -> np.ndarray:
    """Indices of at most `limit` rows spread over the whole range (0: all of them)."""
    if limit == 0 or total <= limit:
        return np.arange(total)
    return np.linspace(0, total - 1, limit).round().astype(np.int64)


def build_exports(config: Config, bundle_dir: Path, out_dir: Path) -> ExportReport:
    """Export, quantise and check into out_dir; the report says what may be served."""
    settings = config.serving.export
    if not settings.onnx:
        return ExportReport(exports.OFF, "serving.export.onnx is false")
    classifier = load_bundle(bundle_dir)
    fp32_path = out_dir / exports.FP32_FILE
    try:
        export_fp32(classifier, fp32_path)
        fp32 = OnnxLogits(fp32_path)
    except Exception as exc:  # the exporter raises many types; torch stays the runtime
        log.warning("ONNX export of %s failed: %s", classifier.meta.arch, exc)
        return ExportReport(exports.FAILED, f"{type(exc).__name__}: {first_line(exc)}")
    images, labels = check_images(config, classifier)
    meta = classifier.meta
    torch_probs = classifier.predict_proba(images, CHECK_BATCH)
    fp32_probs = predict_with(fp32, images, meta, CHECK_BATCH)
    max_diff = float(np.abs(fp32_probs - torch_probs).max()) if len(images) else 0.0
    report = ExportReport(
        status=exports.OK,
        fp32_sha256=sha256_file(fp32_path),
        faithful=max_diff <= settings.max_prob_diff,
        max_prob_diff=max_diff,
        argmax_agreement=agreement(fp32_probs, torch_probs),
        check_images=len(images),
        check_set="test" if labels is not None else "synthetic",
        torch_top1=accuracy(torch_probs, labels),
        fp32_top1=accuracy(fp32_probs, labels),
    )
    return with_int8(config, classifier, report, fp32_path, images, labels, out_dir)


def with_int8(
    config: Config,
    classifier: Classifier,
    report: ExportReport,
    fp32_path: Path,
    images: np.ndarray,
    labels: np.ndarray | None,
    out_dir: Path,
) -> ExportReport:
    calibration = calibration_inputs(config, classifier)
    if calibration is None:
        detail = f"no training cache at {config.prepare.dir / 'train'} to calibrate on"
        return replace(report, int8=exports.SKIPPED, int8_detail=detail)
    int8_path = out_dir / exports.INT8_FILE
    try:
        quantize_int8(fp32_path, calibration, int8_path)
        int8_probs = predict_with(OnnxLogits(int8_path), images, classifier.meta, CHECK_BATCH)
    except Exception as exc:  # quantisation can fail on unusual graphs; fp32 stays usable
        log.warning("int8 quantisation failed: %s", exc)
        int8_path.unlink(missing_ok=True)
        detail = f"{type(exc).__name__}: {first_line(exc)}"
        return replace(report, int8=exports.FAILED, int8_detail=detail)
    int8_top1 = accuracy(int8_probs, labels)
    drop = None if int8_top1 is None else report.torch_top1 - int8_top1
    verdict, detail = int8_verdict(drop, config.serving.max_int8_drop)
    return replace(
        report,
        int8=verdict,
        int8_detail=detail,
        int8_sha256=sha256_file(int8_path),
        int8_top1=int8_top1,
        int8_drop=drop,
        calibration_images=len(calibration),
    )


def int8_verdict(drop: float | None, max_drop: float) -> tuple[str, str]:
    if drop is None:
        return exports.REFUSED, "no prepared test split to measure its accuracy on"
    # A hair of slack: the difference of two accuracies is not exact in floating point.
    if drop <= max_drop + 1e-9:
        return exports.USABLE, f"top-1 drop {drop:.4f} <= serving.max_int8_drop {max_drop:g}"
    return exports.REFUSED, f"top-1 drop {drop:.4f} > serving.max_int8_drop {max_drop:g}"


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(a.argmax(1) == b.argmax(1))) if len(a) else 1.0


def accuracy(probs: np.ndarray, labels: np.ndarray | None) -> float | None:
    if labels is None or len(labels) == 0:
        return None
    return float(np.mean(probs.argmax(1) == labels))


def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def log_exports(config: Config, bundle_dir: Path, digest: str) -> ExportReport:
    """Build the exports and log them into the active MLflow run; the report (for tags)."""
    import mlflow

    artifact_path = f"{exports.ARTIFACT_DIR}/{digest[:12]}"
    with tempfile.TemporaryDirectory(prefix="visionloop-onnx-") as folder:
        out_dir = Path(folder)
        report = build_exports(config, bundle_dir, out_dir)
        if report.status != exports.OK:
            return report
        report = replace(report, artifact_path=artifact_path)
        exports.write_report(out_dir, report)
        mlflow.log_artifacts(str(out_dir), artifact_path)
    log.info(
        "ONNX: max prob diff %.2g, argmax agreement %.4f; int8: %s (%s)",
        report.max_prob_diff,
        report.argmax_agreement,
        report.int8,
        report.int8_detail,
    )
    return report
