"""The champion, and what it saw in training: the reference every drift test compares with."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from visionloop.artifacts.prepared import open_prepared_split
from visionloop.config import Config
from visionloop.errors import VisionloopError
from visionloop.images import fit_batch
from visionloop.monitoring.drift import subsample
from visionloop.monitoring.features import Seen, embed

if TYPE_CHECKING:  # torch comes with it: imported where a model is loaded (features.embed)
    from visionloop.models.classifier import Classifier

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Watched:
    """A model to check with: its classifier and the version it is (or a folder)."""

    classifier: Classifier
    version: str


class NoModel(Exception):
    """Nothing to check with; the message is the reason a check is skipped."""


def champion_or_reason(config: Config) -> Watched:
    """The registry's champion, or NoModel saying why there is none to check with."""
    from visionloop.monitoring.tracking import store_exists
    from visionloop.promotion.registry import load_champion

    if not store_exists(config):
        raise NoModel("no champion yet (no registry database)")  # and none is created here
    try:
        champion = load_champion(config)
    except Exception as exc:  # any failure: the check is skipped, never the ingest
        raise NoModel(f"the champion could not be loaded ({str(exc).splitlines()[0]})") from None
    if champion is None:
        raise NoModel("no champion yet")
    return Watched(champion.classifier, champion.version)


def reference_seen(config: Config, watched: Watched) -> Seen:
    """The champion's view of (a sample of) the prepared train split: the drift reference.

    The checks run after ingest and before training, so the prepared cache is still the
    one the champion was trained on.
    """
    try:
        train = open_prepared_split(config.prepare.dir, "train")
    except FileNotFoundError:
        raise NoModel(f"no prepared train split in {config.prepare.dir} to compare with") from None
    rules = config.monitoring.drift
    picked = subsample(len(train.labels), rules.max_reference, rules.seed)
    meta = watched.classifier.meta
    images = fit_batch(np.asarray(train.images[picked]), meta.image_size, meta.resize)
    return embed(watched.classifier, images)


def watched_from(config: Config, uri: str | None) -> Watched:
    """`--model URI|folder` (serving's resolver and integrity check), or the champion."""
    if uri is None:
        try:
            return champion_or_reason(config)
        except NoModel as exc:
            raise VisionloopError(
                f"{exc}; train and promote a model first, or pass --model URI|bundle-folder"
            ) from None
    from visionloop.models.classifier import load_bundle
    from visionloop.serving.source import local_bundle, resolve

    ref = resolve(config, uri)
    bundle_dir, _ = local_bundle(config, ref)
    return Watched(load_bundle(bundle_dir), ref.version or "local")  # as serving logs a folder
