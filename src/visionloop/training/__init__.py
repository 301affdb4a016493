"""The train stage: prepared cache in, model bundle, metrics and an MLflow run out."""
