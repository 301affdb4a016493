"""Run by MLflow (models from code) when a registered visionloop model is loaded.

visionloop itself never imports this file; `visionloop.promotion.pyfunc.log_bundle_model` logs it.
"""

import sys
from pathlib import Path

import mlflow

# The package travels as one archive in the model's code/ folder (one upload and one
# download instead of ~110 files); MLflow puts code/ on sys.path, the archive goes before
# it. Absent where MLflow runs this file beside the source, while logging the model.
ARCHIVE = Path(__file__).parent / "code" / "visionloop.zip"
if ARCHIVE.is_file():
    sys.path.insert(0, str(ARCHIVE))

from visionloop.promotion.pyfunc import BundlePyfuncModel  # noqa: E402

mlflow.models.set_model(BundlePyfuncModel())
