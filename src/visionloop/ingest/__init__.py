"""Ingest: labelled image drops into the content-addressed, DVC-tracked raw dataset.

Entry point: `ingest_drops(config, drops)`; `visionloop data ingest` is its CLI.
Importing this package imports nothing heavy (DVC is loaded only when tracking runs).
"""

from visionloop.ingest.run import DropOutcome, IngestResult, format_summary, ingest_drops

__all__ = ["DropOutcome", "IngestResult", "format_summary", "ingest_drops"]
