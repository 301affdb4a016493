"""The three runtimes behind one interface: uint8 images at the model's size in, probabilities out.

- torch: the bundle's network, eager (`Classifier.predict_proba`);
- onnx: the fp32 ONNX export, in onnxruntime;
- int8: the statically quantised (QDQ, per channel) ONNX model, in onnxruntime.

All three go through `models.classifier.predict_with` (normalisation, test-time augmentation,
softmax); only the function from a normalised batch to logits differs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from visionloop.artifacts.bundle import BundleMeta
from visionloop.models.classifier import Classifier, predict_with

ONNX_INPUT = "input"
ONNX_OUTPUT = "logits"


class Runtime(Protocol):
    name: str  # torch | onnx | int8
    meta: BundleMeta

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray: ...


class TorchRuntime:
    name = "torch"

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier
        self.meta = classifier.meta

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return self.classifier.predict_proba(images, batch_size)


class OnnxLogits:
    """An onnxruntime session as the logits function `predict_with` calls."""

    def __init__(self, path: Path, threads: int = 0) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only: its warnings are about graph fusions
        options.intra_op_num_threads = threads  # 0: onnxruntime's default (one per core)
        # Idle worker threads sleep instead of spinning: between forward passes a server's
        # event loop and decoding threads need those cores (measured in bench/serve.py:
        # better p99 and throughput under load on 2 cores, p50 no worse).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        inputs = {ONNX_INPUT: batch.cpu().numpy().astype(np.float32, copy=False)}
        return torch.from_numpy(self.session.run([ONNX_OUTPUT], inputs)[0])


class OnnxRuntime:
    def __init__(self, name: str, path: Path, meta: BundleMeta, threads: int = 0) -> None:
        self.name = name  # onnx | int8
        self.meta = meta
        self.logits = OnnxLogits(path, threads)

    def predict_proba(self, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
        return predict_with(self.logits, images, self.meta, batch_size)
