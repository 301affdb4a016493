"""Progress, one API on one library (rich): a bar with counts and ETA on a terminal, and
concise lines (or silence) in CI and logs. Bars go to stderr: stdout carries summaries.

- `track(items, total, description)`: a loop over many items (hashing, decoding, ingest);
- `Progress`: a long run of epochs and steps that also prints one line per epoch.

When the application listens to the library's log (a handler on the `visionloop` logger,
as the Prefect flows attach), the per-epoch lines go there instead of to stderr, so they
reach the flow-run log once.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

T = TypeVar("T")
MIN_ITEMS_FOR_A_BAR = 100  # shorter loops finish before a bar is worth drawing
log = logging.getLogger(__name__)


def resolve_mode(mode: str) -> str:
    """auto -> bar on a terminal, lines elsewhere; bar, lines and off as given."""
    if mode == "auto":
        return "bar" if sys.stderr.isatty() else "lines"
    return mode


def _console():
    from rich.console import Console

    return Console(stderr=True)


def track(
    items: Iterable[T], total: int, description: str, enabled: bool = True, every: int = 0
) -> Iterator[T]:
    """A bar with counts and ETA on a terminal; off a terminal nothing, or with `every` > 0
    one line `description: done/total` to stderr every that many items."""
    if not enabled:
        yield from items
        return
    if resolve_mode("auto") != "bar" or total < MIN_ITEMS_FOR_A_BAR:
        yield from _lines(items, total, description, every)
        return
    from rich.progress import track as rich_track

    yield from rich_track(
        items, description=description, total=total, console=_console(), transient=True
    )


def _lines(items: Iterable[T], total: int, description: str, every: int) -> Iterator[T]:
    for done, item in enumerate(items, start=1):
        yield item
        if every and done % every == 0 and done < total:
            print(f"{description}: {done}/{total}", file=sys.stderr, flush=True)


LOSS_EVERY = 10  # steps between loss readings for the bar (each one waits for the GPU)


class Progress(AbstractContextManager):
    """Epochs of steps: on a terminal one bar over the whole run (steps done, elapsed, ETA to
    the last epoch, the running loss), one line per epoch elsewhere."""

    def __init__(self, mode: str, enabled: bool = True) -> None:
        self.mode = resolve_mode(mode) if enabled else "off"
        self._bar = None
        self._task = None
        self._steps = 0

    def __enter__(self) -> Progress:
        if self.mode == "bar":
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TextColumn("ETA"),
                TimeRemainingColumn(),
                TextColumn("{task.fields[status]}"),
                console=_console(),
                transient=True,
            )
            self._bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        """The bar spans every epoch of the run (a resumed run starts part-way along it), so
        its ETA is to the end of training, not of this epoch."""
        if self._bar is None:
            return
        description = f"epoch {epoch}/{epochs}"
        if self._task is None:
            done = (epoch - 1) * steps
            self._task = self._bar.add_task(
                description, total=epochs * steps, completed=done, status=""
            )
        else:
            self._bar.update(self._task, description=description, total=epochs * steps)

    def advance(self, loss: Any = None) -> None:
        """One step; `loss` (a float or a 0-d tensor) is read every LOSS_EVERY steps."""
        if self._bar is None:
            return
        self._steps += 1
        if loss is not None and self._steps % LOSS_EVERY == 1:
            self._bar.update(self._task, advance=1, status=f"loss {float(loss):.4f}")
        else:
            self._bar.update(self._task, advance=1)

    def epoch_done(self, epoch: int, epochs: int, metrics: dict[str, Any], note: str = "") -> None:
        self.message(
            f"epoch {epoch}/{epochs}  train_loss {metrics['train_loss']:.4f}  "
            f"train_acc {metrics['train_accuracy']:.4f}  val_loss {metrics['val_loss']:.4f}  "
            f"val_acc {metrics['val_accuracy']:.4f}  lr {metrics['lr']:.2e}  "
            f"{metrics['images_per_s']:.0f} img/s  {metrics['epoch_time_s']:.1f}s{note}"
        )

    def message(self, text: str) -> None:
        if self.mode == "off":
            return
        if _log_is_listening():
            log.info(text)
        elif self._bar is not None:
            self._bar.console.print(text)
        else:
            print(text, file=sys.stderr, flush=True)


def _log_is_listening() -> bool:
    return bool(logging.getLogger("visionloop").handlers)
