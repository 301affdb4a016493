"""Errors a user can cause. The CLI prints their message as one line, no traceback."""


class VisionloopError(Exception):
    """An expected failure: bad input, bad params, missing state. Message says what to do."""

    exit_code = 1


class ConfigError(VisionloopError):
    """params.yaml is missing, unreadable or invalid."""

    exit_code = 2
