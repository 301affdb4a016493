"""Errors a user can cause. The CLI prints their message as one line, no traceback."""


class VisionloopError(Exception):
    """An expected failure: bad input, bad params, missing state. Message says what to do."""

    exit_code = 1


class ConfigError(VisionloopError):
    """params.yaml is missing, unreadable or invalid."""

    exit_code = 2


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of an exception's message, cut short: for one-line reports of errors
    raised by other libraries (whose messages may run over many lines)."""
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else ""
