"""The train stage: prepared cache in, model bundle, metrics and an MLflow run out.

`engine.run(config)` is the stage; `loop` has one epoch of training and validation, and
`mlflow_run` what a training run records."""
