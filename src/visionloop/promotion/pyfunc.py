"""The registered model as MLflow sees it: a pyfunc wrapping a visionloop bundle.

Anyone with MLflow can load a registered version, e.g.
`mlflow.pyfunc.load_model("models:/visionloop-classifier@champion")`, or serve it with
`mlflow models serve -m models:/visionloop-classifier@champion --env-manager local`.

Input (the signature): a column `image` of type binary holding encoded images (PNG, JPEG,
...). Over REST the bytes travel base64-encoded, e.g.
`{"dataframe_split": {"columns": ["image"], "data": [["<base64>"]]}}` or
`{"inputs": {"image": ["<base64>"]}}`; MLflow decodes them because the column is declared
binary. Images are decoded by ingest's rules and resized by the bundle's resize rule
(`visionloop.serving.inputs`); a uint8 array (N, H, W, 3) is also accepted by the unwrapped
model (`unwrap_python_model().predict(None, array)`). Parameter `top_k` (default from
serving.top_k at registration).

Output: one row per image with `label`, `confidence`, `top_k` (a list of
{label, probability}, most probable first) and `probabilities` ({class name: probability}).
A bad image raises an MlflowException naming the image and the reason (HTTP 400 from
`mlflow models serve`), never a traceback.

Integrity: `model_config` records the bundle's `bundle_sha256` (as the version's tag does);
loading checks the bundle's files against it (`load_context`), and `download_checked`
checks a downloaded version against its registry tag before anything loads it.

The model is logged "from code" (MLflow's models-from-code: a Python file, not a pickle),
and the visionloop package travels with it as code (one zip, `code/visionloop.zip`, which
the entry file puts on sys.path), so loading needs no pickle and no visionloop install, only
the pip requirements recorded with the model.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

IMAGE_COLUMN = "image"
OUTPUT_COLUMNS = ("label", "confidence", "top_k", "probabilities")
BUNDLE_ARTIFACT = "bundle"
MODEL_NAME_IN_RUN = "model"
ENTRY_FILE = Path(__file__).with_name("mlflow_model_code.py")
CODE_ARCHIVE = "visionloop.zip"  # the name ENTRY_FILE looks for in the model's code/ folder
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can hold
# What loading the model imports; pinned to this environment (inferring them takes ~11 s).
RUNTIME_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pillow", "pydantic", "pyyaml")
DEFAULT_TOP_K = 5
DIGEST_SETTING = "bundle_sha256"  # in model_config: the bundle's digest at registration
BASE64_TEXT = re.compile(rb"[A-Za-z0-9+/=\s]+")

if TYPE_CHECKING:
    from visionloop.config import RegistryConfig


class BundlePyfuncModel(mlflow.pyfunc.PythonModel):
    """Encoded images in, label, confidence, top-k and class probabilities out."""

    # No type hints on `predict`, on purpose (MLflow would turn them into a schema it
    # coerces inputs to; the signature says what goes in). Without this flag MLflow warns
    # about the missing hints wherever the class is imported, and its warning cannot be
    # filtered (it resets the filters); the flag skips a wrapper that would only call
    # `predict` as it is.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from visionloop.artifacts.bundle import verify_bundle
        from visionloop.config import IngestConfig
        from visionloop.models.classifier import load_bundle

        settings = getattr(context, "model_config", None) or {}
        bundle_dir = Path(context.artifacts[BUNDLE_ARTIFACT])
        if settings.get(DIGEST_SETTING):  # versions registered before it was recorded: none
            verify_bundle(bundle_dir, settings[DIGEST_SETTING], "the registered model")
        self.classifier = load_bundle(bundle_dir)
        self.rules = IngestConfig(**settings.get("image_rules", {}))
        self.top_k = int(settings.get("top_k", DEFAULT_TOP_K))

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        meta = self.classifier.meta
        top_k = int((params or {}).get("top_k") or self.top_k)
        try:
            images = to_image_batch(model_input, meta.image_size, meta.resize, self.rules)
        except ValueError as exc:
            raise bad_input(str(exc)) from None
        probs = self.classifier.predict_proba(images)
        return prediction_frame(probs, meta.classes, top_k)


def to_image_batch(model_input, size: int, resize: str = "crop", rules=None) -> np.ndarray:
    """The accepted inputs as one uint8 (N, size, size, 3) batch, resized as prepare does.

    With `rules` (an IngestConfig) encoded images are screened as ingest screens them
    (formats, pixel cap, sides); a bad one raises ValueError naming it and the reason.
    """
    from visionloop.images import fit_batch, load_for_model

    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(
                f"expected a DataFrame column {IMAGE_COLUMN!r} of encoded images (base64 over "
                f"REST), got columns {list(model_input.columns)}"
            )
        values = [as_bytes(value, i) for i, value in enumerate(model_input[IMAGE_COLUMN])]
        if rules is None:
            images = [load_for_model(data, size, resize) for data in values]
        else:
            images = [
                screened_pixels(data, i, size, resize, rules) for i, data in enumerate(values)
            ]
        return np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
    if isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8:
        if model_input.ndim != 4 or model_input.shape[-1] != 3:
            raise ValueError(f"expected uint8 images (N, H, W, 3), got {model_input.shape}")
        return fit_batch(model_input, size, resize)
    raise ValueError(
        f"expected a DataFrame with an {IMAGE_COLUMN!r} column of encoded images or a uint8 "
        f"array (N, H, W, 3), got {type(model_input).__name__}"
    )


def screened_pixels(data: bytes, index: int, size: int, resize: str, rules) -> np.ndarray:
    from visionloop.serving.inputs import to_model_image
    from visionloop.serving.reasons import BadImage

    try:
        return to_model_image(data, size, resize, rules).pixels
    except BadImage as exc:
        raise ValueError(f"image {index}: {exc}") from None


def as_bytes(value, index: int) -> bytes:
    """Encoded image bytes from what MLflow hands over: bytes (the binary signature decoded
    the base64 of `dataframe_split`), or base64 still as text (`inputs` arrives as numpy
    bytes of the base64 text; a str when the schema was not enforced)."""
    if isinstance(value, bytes | bytearray | memoryview | np.bytes_):
        data = bytes(value)
        # An image file never consists of base64 letters alone (PNG, JPEG, ... open with
        # binary magic numbers), so such bytes are base64 text.
        return decode_base64(data, index) if BASE64_TEXT.fullmatch(data) else data
    if isinstance(value, str):
        return decode_base64(value.encode("ascii", "replace"), index)
    raise ValueError(f"image {index}: expected encoded image bytes, got {type(value).__name__}")


def decode_base64(text: bytes, index: int) -> bytes:
    try:
        return base64.b64decode(re.sub(rb"\s+", b"", text), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"image {index}: not valid base64") from None


class InputRejected(MlflowException):
    """A bad input, as `mlflow models serve` answers it: 400, this message, no traceback.

    MLflow's scoring server prefixes the message of an MlflowException raised by a model
    with the whole input (`Failed to predict data '<repr>'`), so a client that sent
    megabytes of base64 would get them back; the first message set is the one kept.
    """

    @property
    def message(self) -> str:
        return self._first_message

    @message.setter
    def message(self, value: str) -> None:
        if not hasattr(self, "_first_message"):
            self._first_message = value


def bad_input(message: str) -> InputRejected:
    return InputRejected(message, error_code=INVALID_PARAMETER_VALUE)


def prediction_frame(probs: np.ndarray, classes: tuple[str, ...], top_k: int) -> pd.DataFrame:
    from visionloop.serving.results import describe, probabilities

    rows = [
        {**describe(row, classes, top_k), "probabilities": probabilities(row, classes)}
        for row in probs
    ]
    return pd.DataFrame(rows, columns=list(OUTPUT_COLUMNS))


def output_probabilities(frame: pd.DataFrame) -> np.ndarray:
    """Class probabilities from a prediction frame: this format's `probabilities` column, or
    the class columns that versions registered before it returned."""
    if "probabilities" in frame.columns:  # {class: p} in class-map order
        return np.array([list(row.values()) for row in frame["probabilities"]], dtype=float)
    return frame.to_numpy(dtype=float)


def encoded_frame(images: np.ndarray) -> pd.DataFrame:
    """uint8 images as the model's input: a column of PNG bytes."""
    return pd.DataFrame({IMAGE_COLUMN: [png_bytes(image) for image in images]})


def png_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def signature(top_k: int):
    from mlflow.models import ModelSignature
    from mlflow.types.schema import (
        Array,
        ColSpec,
        Map,
        Object,
        ParamSchema,
        ParamSpec,
        Property,
        Schema,
    )

    best = Object([Property("label", "string"), Property("probability", "double")])
    outputs = Schema(
        [
            ColSpec("string", "label"),
            ColSpec("double", "confidence"),
            ColSpec(Array(best), "top_k"),
            ColSpec(Map("double"), "probabilities"),
        ]
    )
    return ModelSignature(
        inputs=Schema([ColSpec("binary", IMAGE_COLUMN)]),
        outputs=outputs,
        params=ParamSchema([ParamSpec("top_k", "long", top_k)]),
    )


def input_example(image: np.ndarray) -> pd.DataFrame:
    """One real image, PNG-encoded: what the MLflow UI and `mlflow models serve` show."""
    return encoded_frame(image[None])


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in RUNTIME_PACKAGES]


def log_bundle_model(bundle_dir: Path, example_image: np.ndarray, settings: dict):
    """Log the bundle as a pyfunc model in the active run; MLflow's ModelInfo.

    `settings`: {"image_rules": ..., "top_k": ...}, the decode rules and default top-k the
    model applies wherever it is loaded (no params.yaml there).
    """
    import tempfile

    with tempfile.TemporaryDirectory(prefix="visionloop-code-") as work:
        return mlflow.pyfunc.log_model(
            name=MODEL_NAME_IN_RUN,
            python_model=str(ENTRY_FILE),
            artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
            code_paths=[str(package_archive(Path(work) / CODE_ARCHIVE))],
            pip_requirements=pip_requirements(),
            signature=signature(int(settings.get("top_k", DEFAULT_TOP_K))),
            input_example=input_example(example_image),
            model_config=settings,
        )


def package_archive(path: Path) -> Path:
    """All of visionloop's source as one zip (what `ENTRY_FILE` puts on sys.path), the same
    bytes for the same source: files in order, fixed timestamps."""
    import zipfile

    package_dir = Path(__file__).parents[1]
    files = (p for p in package_dir.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    with zipfile.ZipFile(path, "w") as archive:
        for file in sorted(files):
            entry = zipfile.ZipInfo(file.relative_to(package_dir.parent).as_posix(), ZIP_EPOCH)
            archive.writestr(entry, file.read_bytes(), compress_type=zipfile.ZIP_DEFLATED)
    return path


def download_checked(
    registry: RegistryConfig, name: str, version: str, expected: str | None, fresh: bool = False
) -> tuple[Path, Path, str]:
    """(model folder, bundle folder, digest) of registered version `version` once the bundle's
    files hash to `expected` (its `bundle_sha256` tag), else BundleDamaged. Gate, promote,
    rollback, predict and serve all go through here.

    The copy kept on this machine (`registry`: the RegistryConfig naming the folder and how
    many versions it keeps; promotion.version_cache) is used when it passes that check, else
    downloaded again; `fresh` also checks the registry's own copy (before an alias moves)."""
    import mlflow

    from visionloop.artifacts.bundle import verify_bundle
    from visionloop.promotion import version_cache

    def fill(folder: Path) -> None:
        import mlflow.artifacts

        mlflow.artifacts.download_artifacts(
            artifact_uri=f"models:/{name}/{version}", dst_path=str(folder)
        )

    def check(folder: Path) -> tuple[Path, Path, str]:
        bundle_dir = folder / bundle_path(folder)
        return folder, bundle_dir, verify_bundle(bundle_dir, expected, f"{name} v{version}")

    key = version_cache.entry_name(mlflow.get_registry_uri(), name, version, expected)
    cache, keep = registry.cache_folder, registry.cache_versions
    return version_cache.checked(cache, keep, key, fill, check, fresh)


def bundle_path(model_folder: Path) -> str:
    """Where an MLflow model folder of this format keeps the bundle, relative to it."""
    from mlflow.models import Model

    artifacts = Model.load(model_folder).flavors["python_function"].get("artifacts", {})
    return artifacts[BUNDLE_ARTIFACT]["path"]
