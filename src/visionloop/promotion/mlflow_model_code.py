"""Run by MLflow (models from code) when a registered visionloop model is loaded.

visionloop itself never imports this file; `visionloop.promotion.pyfunc.log_bundle_model` logs it.
"""

import importlib.util
import sys
from pathlib import Path

import mlflow

# The package travels as one archive in the model's code/ folder (one upload and one
# download instead of ~110 files). It is put on sys.path only where visionloop is not
# installed: in a process that has visionloop, the archive in front of it would make every
# later import of a visionloop module load the registered version's (older) copy, mixed
# with the modules already loaded. Absent where MLflow runs this file beside the source.
ARCHIVE = Path(__file__).parent / "code" / "visionloop.zip"
if ARCHIVE.is_file() and importlib.util.find_spec("visionloop") is None:
    sys.path.append(str(ARCHIVE))

from visionloop.promotion.pyfunc import BundlePyfuncModel  # noqa: E402

mlflow.models.set_model(BundlePyfuncModel())
