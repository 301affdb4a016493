"""Following an alias: the served model changes when `@champion` moves, and only to a good one.

`ModelHolder.current` is the one reference to the model in use. A request reads it once and
keeps that model to the end, so a swap (one assignment) never changes a request midway.

`Follower` polls the registry every `serving.poll_seconds` in a background thread. When the
alias points at another version, that version is downloaded, checked (bundle and ONNX files
against their registered sha256, then a smoke prediction) and swapped in. A version that
fails is not used: the server keeps its model, says so in its log and in `GET /v1/model`,
and does not retry that version until the alias moves again (a failed download is retried
at the next poll). An unreachable registry changes nothing but the status.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.serving.metrics import Metrics
from visionloop.serving.source import (
    LoadedModel,
    ModelRefused,
    RegistryUnavailable,
    load_model,
    resolve,
)

log = logging.getLogger(__name__)


class ModelHolder:
    def __init__(self, model: LoadedModel, metrics: Metrics) -> None:
        self.metrics = metrics
        self.current = model
        metrics.serving(model)

    def swap(self, model: LoadedModel) -> None:
        self.current = model
        self.metrics.serving(model)


@dataclass
class FollowStatus:
    follows: str
    poll_seconds: float
    last_check: str | None = None
    last_error: str | None = None  # the last poll's problem (registry unreachable, ...)
    refused: dict[str, str] = field(default_factory=dict)  # version -> why it was not used

    def as_dict(self) -> dict[str, Any]:
        return {
            "follows": self.follows,
            "poll_seconds": self.poll_seconds,
            "last_check": self.last_check,
            "last_error": self.last_error,
            "refused": [{"version": v, "reason": r} for v, r in self.refused.items()],
        }


class Follower:
    def __init__(
        self,
        config: Config,
        uri: str,
        runtime: str | None,
        holder: ModelHolder,
        metrics: Metrics,
    ) -> None:
        self.config = config
        self.uri = uri
        self.runtime = runtime
        self.holder = holder
        self.metrics = metrics
        self.status = FollowStatus(uri, config.serving.poll_seconds)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="follow-alias", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.wait(self.config.serving.poll_seconds):
            try:
                self.check()
            except Exception:  # never let the follower die: the server must keep serving
                log.exception("checking %s failed unexpectedly; will try again", self.uri)

    def check(self) -> str:
        """One poll: what happened (unchanged, swapped, refused, unreachable)."""
        from visionloop.artifacts.prediction_log import now_iso
        from visionloop.promotion.registry import DIGEST_TAG

        self.status.last_check = now_iso()
        current = self.holder.current
        try:
            ref = resolve(self.config, self.uri)
        except RegistryUnavailable as exc:
            return self._keep("unreachable", f"{exc}; keeping {current.ref.label}")
        except VisionloopError as exc:  # e.g. the alias was deleted
            return self._keep("unresolved", f"{exc}; keeping {current.ref.label}")
        self.status.last_error = None
        same = ref.version == current.ref.version
        if same and ref.tags.get(DIGEST_TAG) == current.bundle_sha256:
            return "unchanged"
        if ref.version in self.status.refused:
            return "refused"
        log.info("%s now points at %s; loading it", self.uri, ref.label)
        try:
            model = load_model(self.config, ref, self.runtime)
        except (ModelRefused, VisionloopError) as exc:
            return self._refuse(ref.version, exc)
        except Exception as exc:  # whatever breaks in a new model must not reach the server
            log.exception("loading %s failed", ref.label)
            return self._refuse(ref.version, exc)
        previous = current.ref.label
        self.holder.swap(model)
        self.metrics.swaps.labels("swapped").inc()
        log.info("swapped %s -> %s (%s)", previous, ref.label, model.runtime.name)
        return "swapped"

    def _keep(self, outcome: str, message: str) -> str:
        self.status.last_error = message
        self.metrics.registry_errors.inc()
        log.warning(message)
        return outcome

    def _refuse(self, version: str, exc: Exception) -> str:
        retry = isinstance(exc, ModelRefused) and exc.check == "download"
        message = f"{exc}; keeping {self.holder.current.ref.label}"
        if retry:
            self.status.last_error = message
        else:
            self.status.refused[version] = str(exc)
            self.metrics.swaps.labels("refused").inc()
        log.error("not swapping to v%s: %s", version, message)
        return "retry" if retry else "refused"
