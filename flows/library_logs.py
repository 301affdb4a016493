"""The library's log records (ingest counts, validation warnings, epochs, the gate's
verdict, the registry's action) in the Prefect flow-run logs, beside Prefect's own lines.

The library logs through `logging.getLogger("visionloop...")` and never imports Prefect.
Each flow attaches Prefect's API log handler to that logger when it starts: the same as
PREFECT_LOGGING_EXTRA_LOGGERS=visionloop, but also where Prefect was imported before that
variable could be set (a worker's flow-run process, the test suite).
"""

from __future__ import annotations

import logging

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

LIBRARY_LOGGER = "visionloop"


class _RunLogHandler(APILogHandler):
    """Sends only what is logged inside a flow or task run: a CLI command run later in the
    same process has no run to attach its lines to."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            super().emit(record)


def send_library_logs_to_prefect() -> None:
    """Idempotent: one handler however many flows start in the process."""
    logger = logging.getLogger(LIBRARY_LOGGER)
    logger.setLevel(logging.INFO)
    if not any(isinstance(handler, APILogHandler) for handler in logger.handlers):
        logger.addHandler(_RunLogHandler())
