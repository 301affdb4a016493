"""The promotion half of the loop: evaluate the candidate, gate it against the champion,
register and promote it in the MLflow Model Registry (`evaluate`, `gate`, `registry`), and
the registered model as MLflow serves it (`pyfunc`)."""
