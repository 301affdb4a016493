"""ONNX fp32 and int8 at registration: real exporter, real onnxruntime, real digits."""

from __future__ import annotations

import hashlib
from pathlib import Path

import mlflow.artifacts
import numpy as np
import onnx
import onnxruntime
import pytest

from tests.helpers import REPO_PARAMS
from tests.integration.serving.conftest import overrides
from tests.integration.serving.support import MODEL
from visionloop.artifacts import exports
from visionloop.artifacts.exports import report_from_tags
from visionloop.config import deep_merge, load_config
from visionloop.errors import VisionloopError
from visionloop.promotion.registry import registry_client
from visionloop.serving.export import MAX_IR_VERSION, build_exports
from visionloop.serving.source import choose_runtime, resolve

ORT_MAX_IR_VERSION = 13  # what onnxruntime 1.31 loads


def session(path) -> onnxruntime.InferenceSession:
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_both_exports_load_take_any_batch_and_agree_with_torch(served_registry, tmp_path):
    report = build_exports(served_registry.config, served_registry.bundles["good"], tmp_path)
    assert report.status == exports.OK and report.check_set == "test"
    assert report.check_images == 300 and report.argmax_agreement == 1.0
    assert report.faithful and report.max_prob_diff < 1e-4
    assert report.fp32_top1 == report.torch_top1 > 0.9
    assert report.int8 == exports.USABLE and report.int8_drop <= 0.005
    assert report.calibration_images == 256
    fp32, int8 = tmp_path / exports.FP32_FILE, tmp_path / exports.INT8_FILE
    for path in (fp32, int8):
        assert onnx.load(str(path)).ir_version <= min(MAX_IR_VERSION, ORT_MAX_IR_VERSION)
        for batch in (1, 7):
            inputs = {"input": np.zeros((batch, 3, 16, 16), dtype=np.float32)}
            assert session(path).run(["logits"], inputs)[0].shape == (batch, 10)
    quantised = onnx.load(str(int8))
    ops = {node.op_type for node in quantised.graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    weight_scales = [
        init for init in quantised.graph.initializer if init.name.endswith("_scale") and init.dims
    ]
    assert weight_scales, "per-channel quantisation keeps one scale per output channel"
    assert int8.stat().st_size < fp32.stat().st_size / 2


def test_int8_is_refused_when_its_top1_drop_is_above_the_limit(served_registry, tmp_path):
    # Calibrated on a single image, the weak model's int8 loses 2.3 points on the test split.
    settings = deep_merge(
        overrides(served_registry.root), {"serving": {"export": {"calibration_images": 1}}}
    )
    config = load_config(REPO_PARAMS, overrides=settings)
    report = build_exports(config, served_registry.bundles["weak"], tmp_path)
    assert report.status == exports.OK and report.calibration_images == 1
    assert report.int8 == exports.REFUSED and report.int8_drop > 0.005
    assert "> serving.max_int8_drop 0.005" in report.int8_detail
    assert not report.int8_usable and report.fp32_usable
    ref = resolve(served_registry.config, f"models:/{MODEL}/1")
    assert choose_runtime("auto", ref, report)[0] == "onnx"
    with pytest.raises(VisionloopError, match="int8 model is refused"):
        choose_runtime("int8", ref, report)


def test_registered_versions_carry_their_exports(served_registry):
    client = registry_client(served_registry.config)
    for version in ("1", "2"):
        model_version = client.get_model_version(MODEL, version)
        report = report_from_tags(model_version.tags)
        assert report.status == exports.OK and report.fp32_usable
        assert model_version.tags["exports.faithful"] == "true"
        folder = mlflow.artifacts.download_artifacts(
            run_id=model_version.run_id, artifact_path=report.artifact_path
        )
        files = {exports.FP32_FILE: report.fp32_sha256, exports.INT8_FILE: report.int8_sha256}
        for name, digest in files.items():
            assert hashlib.sha256((Path(folder) / name).read_bytes()).hexdigest() == digest
        assert (Path(folder) / exports.REPORT_FILE).exists()
