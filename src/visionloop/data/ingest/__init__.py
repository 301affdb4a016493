"""Ingest: labelled image drops into the content-addressed, DVC-tracked raw store.

Entry point: `ingest_drops(config, drops)`; `visionloop data ingest` is its CLI.
Importing this package imports nothing heavy (DVC is loaded only when tracking runs).
"""

from visionloop.data.ingest.run import DropOutcome, DropStatus, IngestResult, ingest_drops

__all__ = ["DropOutcome", "DropStatus", "IngestResult", "ingest_drops"]
