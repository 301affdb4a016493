"""Run by MLflow (models from code) when a registered visionloop model is loaded.

visionloop itself never imports this file; `visionloop.promotion.pyfunc.log_bundle_model` logs it.
"""

import mlflow

from visionloop.promotion.pyfunc import BundlePyfuncModel

mlflow.models.set_model(BundlePyfuncModel())
