"""The registered model as MLflow sees it: a pyfunc wrapping a visionloop bundle.

Anyone with MLflow can load a registered version, e.g.
`mlflow.pyfunc.load_model("models:/visionloop-classifier@champion")`, and call `predict` on:

- a pandas DataFrame with a column `image` holding encoded image bytes (PNG, JPEG, ...;
  decoded with visionloop.images.open_rgb, the same rule as ingest), or
- a uint8 numpy array (N, H, W, 3) of RGB images.

Images of another size are resized to the bundle's input size. The result is a DataFrame
of class probabilities: one row per image, one column per class name, in class-map order.

The model is logged "from code" (MLflow's models-from-code: a Python file, not a pickle),
and the visionloop package travels with it as code, so loading needs no pickle and no
visionloop install, only the pip requirements recorded with the model.
"""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import mlflow.pyfunc
import numpy as np
import pandas as pd

IMAGE_COLUMN = "image"
BUNDLE_ARTIFACT = "bundle"
MODEL_NAME_IN_RUN = "model"
ENTRY_FILE = Path(__file__).with_name("mlflow_model_code.py")
# What loading the model imports; pinned to this environment (inferring them takes ~11 s).
RUNTIME_PACKAGES = ("mlflow", "torch", "numpy", "pandas", "pillow")


class BundlePyfuncModel(mlflow.pyfunc.PythonModel):
    """Encoded image bytes or uint8 arrays in, class probabilities out."""

    def load_context(self, context) -> None:
        from visionloop.models.classifier import load_bundle

        self.classifier = load_bundle(Path(context.artifacts[BUNDLE_ARTIFACT]))

    # No type hints on model_input: MLflow would turn them into an input schema and coerce.
    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        meta = self.classifier.meta
        probs = self.classifier.predict_proba(
            to_image_batch(model_input, meta.image_size, meta.resize)
        )
        return pd.DataFrame(probs, columns=list(meta.classes))


def to_image_batch(model_input, size: int, resize: str = "crop") -> np.ndarray:
    """The accepted inputs as one uint8 (N, size, size, 3) batch, resized as prepare does."""
    from visionloop.images import fit_batch, load_for_model

    if isinstance(model_input, pd.DataFrame):
        if IMAGE_COLUMN not in model_input.columns:
            raise ValueError(f"expected a DataFrame column {IMAGE_COLUMN!r} of encoded images")
        images = [load_for_model(bytes(b), size, resize) for b in model_input[IMAGE_COLUMN]]
        return np.stack(images) if images else np.zeros((0, size, size, 3), dtype=np.uint8)
    if isinstance(model_input, np.ndarray) and model_input.dtype == np.uint8:
        if model_input.ndim != 4 or model_input.shape[-1] != 3:
            raise ValueError(f"expected uint8 images (N, H, W, 3), got {model_input.shape}")
        return fit_batch(model_input, size, resize)
    raise ValueError(
        f"expected a DataFrame with an {IMAGE_COLUMN!r} column of encoded images or a uint8 "
        f"array (N, H, W, 3), got {type(model_input).__name__}"
    )


def pip_requirements() -> list[str]:
    return [f"{name}=={version(name)}" for name in RUNTIME_PACKAGES]


def log_bundle_model(bundle_dir: Path):
    """Log the bundle as a pyfunc model in the active run; MLflow's ModelInfo."""
    package_dir = Path(__file__).parents[1]  # all of visionloop travels with the model
    return mlflow.pyfunc.log_model(
        name=MODEL_NAME_IN_RUN,
        python_model=str(ENTRY_FILE),
        artifacts={BUNDLE_ARTIFACT: str(bundle_dir)},
        code_paths=[str(package_dir)],
        pip_requirements=pip_requirements(),
    )
