"""The library's log records (ingest counts, validation warnings, epochs, the gate's
verdict, the registry's action) in the Prefect flow-run logs, beside Prefect's own lines.

The library logs through `logging.getLogger("visionloop...")` and never imports Prefect.
While a flow runs, Prefect's API log handler sits on that logger: the same as
PREFECT_LOGGING_EXTRA_LOGGERS=visionloop, but also where Prefect was imported before that
variable could be set (a worker's flow-run process, the test suite). When the last flow in
the process ends, the logger is left as it was, so a command run later in the same process
prints as it always does.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

LIBRARY_LOGGER = "visionloop"
_lock = threading.Lock()
_flows_running = 0  # flows of this process inside the block (a subflow, concurrent runs)
_handler: APILogHandler | None = None
_level_before = logging.NOTSET


class _RunLogHandler(APILogHandler):
    """Sends only what is logged inside a flow or task run (not another thread's lines)."""

    def emit(self, record: logging.LogRecord) -> None:
        if FlowRunContext.get() is not None or TaskRunContext.get() is not None:
            super().emit(record)


@contextmanager
def library_logs_to_prefect() -> Iterator[None]:
    _attach()
    try:
        yield
    finally:
        _detach()


def _attach() -> None:
    global _flows_running, _handler, _level_before
    logger = logging.getLogger(LIBRARY_LOGGER)
    with _lock:
        if _flows_running == 0:
            _handler, _level_before = _RunLogHandler(), logger.level
            logger.addHandler(_handler)
            logger.setLevel(logging.INFO)
        _flows_running += 1


def _detach() -> None:
    global _flows_running, _handler
    logger = logging.getLogger(LIBRARY_LOGGER)
    with _lock:
        _flows_running -= 1
        if _flows_running == 0 and _handler is not None:
            _handler.flush()
            logger.removeHandler(_handler)
            logger.setLevel(_level_before)
            _handler = None
