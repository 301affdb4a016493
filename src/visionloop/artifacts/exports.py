"""The ONNX exports of a registered version, written at registration and read by serving.

At registration the bundle is exported to ONNX (fp32) and quantised to int8; both files are
logged as artifacts of the version's MLflow run under `serving/<bundle sha256[:12]>/`
(`model.onnx`, `model.int8.onnx`, `exports.json`), and what was measured is set as tags on
the model version (`onnx.*`, `int8.*`), so that serving decides which runtime it may use
from the version alone, and every registry user sees the figures.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from visionloop.atomic import write_json_atomic

ARTIFACT_DIR = "serving"
FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
REPORT_FILE = "exports.json"
TAG_PREFIX = "exports."

# ExportReport.status
OK, FAILED, OFF = "ok", "failed", "off"
# ExportReport.int8
USABLE, REFUSED, SKIPPED = "usable", "refused", "skipped"


@dataclass(frozen=True)
class ExportReport:
    status: str  # ok | failed (export or load failed: detail says why) | off (not asked for)
    detail: str = ""
    artifact_path: str = ""  # in the version's run: ARTIFACT_DIR/<digest[:12]>
    fp32_sha256: str = ""
    faithful: bool = False  # fp32 probabilities within serving.export.max_prob_diff of torch's
    max_prob_diff: float | None = None  # largest |p_onnx - p_torch| over the check images
    argmax_agreement: float | None = None  # share of check images with the same top-1 class
    check_images: int = 0
    check_set: str = ""  # test (the prepared test split) | synthetic (no test split there)
    torch_top1: float | None = None  # accuracy on the check images (test set only)
    fp32_top1: float | None = None
    int8: str = SKIPPED  # usable | refused (top-1 drop too large) | failed | skipped
    int8_detail: str = ""
    int8_sha256: str = ""
    int8_top1: float | None = None
    int8_drop: float | None = None  # fp32 top-1 - int8 top-1
    calibration_images: int = 0

    @property
    def fp32_usable(self) -> bool:
        return self.status == OK and self.faithful

    @property
    def int8_usable(self) -> bool:
        return self.status == OK and self.int8 == USABLE


def write_report(folder: Path, report: ExportReport) -> Path:
    return write_json_atomic(folder / REPORT_FILE, asdict(report))


def report_tags(report: ExportReport) -> dict[str, str]:
    """The report as model-version tags (MLflow tags are strings; None is left out)."""
    tags = {}
    for key, value in asdict(report).items():
        if value is None or value == "":
            continue
        tags[TAG_PREFIX + key] = json.dumps(value) if isinstance(value, bool) else str(value)
    return tags


def report_from_tags(tags: dict[str, str]) -> ExportReport | None:
    """The report recorded on a version, or None for a version registered without one."""
    if TAG_PREFIX + "status" not in tags:
        return None
    values = {}
    for field in fields(ExportReport):
        raw = tags.get(TAG_PREFIX + field.name)
        if raw is not None:
            values[field.name] = _PARSERS.get(str(field.type), str)(raw)
    return ExportReport(**values)


# Field annotations (strings, under `from __future__ import annotations`) -> tag parser.
_PARSERS = {"bool": lambda raw: raw == "true", "float | None": float, "int": int}
