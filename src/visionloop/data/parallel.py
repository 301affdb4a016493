"""Work on many stored images at once: chunks of shard members, each chunk read from its
shard and processed in a worker process, results in order, few chunks in flight.

Decoding a small image is mostly Python work inside Pillow, under the GIL, so threads
barely use a second core; processes do (measured in docs/data.md). A job of one chunk, or
`workers` 1, runs in this process: no start-up cost for small data. Workers are started
with `spawn` (no fork of a process that may hold threads or locks), and at most
2 x workers chunks are in flight, so memory does not grow with the number of images.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

from visionloop.artifacts.raw_store import Member

CHUNK = 256  # images per task: enough to pay for the hand-over, small enough to bound memory
Result = TypeVar("Result")


def default_workers(configured: int = 0) -> int:
    """`configured`, or one per CPU core (at most 8) when it is 0."""
    return configured or min(8, os.cpu_count() or 1)


def map_member_chunks(
    function: Callable[[Path, list[Member]], Result],
    raw_dir: Path,
    members: list[Member],
    workers: int,
    chunk: int = CHUNK,
) -> Iterator[Result]:
    """`function(raw_dir, chunk)` for each chunk of `members`, in order.

    `function` must be importable by name (a module-level function or a partial of one):
    worker processes receive it by pickling. Give members in `raw_store.reading_order` for
    sequential reads.
    """
    chunks = [members[start : start + chunk] for start in range(0, len(members), chunk)]
    if workers <= 1 or len(chunks) <= 1:
        yield from (function(raw_dir, part) for part in chunks)
        return
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(min(workers, len(chunks)), mp_context=context)
    try:
        pending: deque[Future] = deque()
        for part in chunks:
            pending.append(pool.submit(function, raw_dir, part))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
