"""Errors a user can cause. The CLI prints their message as one line, no traceback.

OS errors a user's machine causes (a full disk, a read-only or foreign mount, permissions,
too many open files) are expected too: `os_error_line` turns the known ones into one line
with the path and what to do; the CLI's error group applies it to whatever a command
raises, so no step needs its own try/except. Writers go through visionloop.atomic, so
such an error leaves the old file or none, never half of one.
"""

import errno


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


# errno -> what to do about it (the message names the path and the error itself).
OS_ERROR_ADVICE = {
    errno.ENOSPC: "free space on that filesystem (or point the path in params.yaml at "
    "another one) and run the command again; nothing was half-written",
    errno.EDQUOT: "the disk quota is used up: free space and run the command again",
    errno.EXDEV: "the source and target are on different filesystems: put them on one, or "
    "report this (visionloop copies across filesystems where it moves files)",
    errno.EACCES: "this user may not write or read there: fix the permissions or run as "
    "the folder's owner",
    errno.EPERM: "the operation is not permitted there: fix the permissions or the mount",
    errno.EROFS: "that filesystem is mounted read-only: remount it read-write or point the "
    "path in params.yaml elsewhere",
    errno.EMFILE: "too many open files in this process: raise the limit (`ulimit -n 4096`) "
    "or lower the worker count in params.yaml",
    errno.ENFILE: "the system ran out of file handles: close other programs or raise fs.file-max",
}


def os_error_line(exc: BaseException) -> str | None:
    """One line for a known OS error (its path and what to do); None for any other error.

    Looks through the causes too: libraries (torch's zip writer, DVC) wrap the OSError.
    """
    seen, visited = exc, set()
    while seen is not None and id(seen) not in visited:
        visited.add(id(seen))
        if isinstance(seen, OSError) and seen.errno in OS_ERROR_ADVICE:
            where = " -> ".join(str(f) for f in (seen.filename, seen.filename2) if f)
            what = seen.strerror or errno.errorcode.get(seen.errno, str(seen.errno))
            return f"{what}{': ' + where if where else ''}: {OS_ERROR_ADVICE[seen.errno]}"
        seen = seen.__cause__ or seen.__context__
    return None


def with_path(exc: OSError, path) -> OSError:
    """`exc` naming `path`: a write to an open handle raises an OSError that names no file,
    and the user needs to know which disk filled up. Raise the result `from exc`."""
    named = OSError(exc.errno, exc.strerror, str(exc.filename or path))
    named.__cause__ = exc
    return named
