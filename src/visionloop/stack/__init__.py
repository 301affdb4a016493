"""The production stack on one machine: `visionloop stack up | down | status | env`.

PostgreSQL 15 (the Debian package's binaries, a project-local data folder), an MLflow
tracking server with basic auth and served artifacts, a Prefect server with an API auth
string, and a process worker that runs the deployments of the project's prefect.yaml. All
of them listen on 127.0.0.1 only, with generated passwords kept in one 0600 file.

The servers are separate processes started from their own command lines; this package only
starts, checks and stops them, and talks to them over HTTP. It never imports Prefect: the
project's flows reach the stack through the environment `visionloop stack env` prints
(MLFLOW_TRACKING_URI, PREFECT_API_URL and their credentials), with no code of their own.
"""
