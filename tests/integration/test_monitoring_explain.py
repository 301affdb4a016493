"""Grad-CAM for every architecture of the zoo, evaluate's error grid, `visionloop explain`,
and `visionloop select` on a folder of unlabelled images."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from tests.helpers import run_cli
from tests.ingest_corpus import project
from tests.integration.monitoring.helpers import png_bytes, unseen_digits, watched
from visionloop.artifacts.bundle import BundleMeta
from visionloop.cli import cli
from visionloop.models.classifier import Classifier
from visionloop.models.zoo import ZOO, build_model, min_image_size
from visionloop.monitoring.explain import (
    MIN_SIDE,
    TARGET_LAYERS,
    _map_sides,
    error_grid,
    grad_cam,
    target_layer_name,
)
from visionloop.monitoring.select import select_to_label, uncertainty


@pytest.mark.parametrize("arch", sorted(ZOO))
def test_grad_cam_works_for_every_architecture(arch):
    torch.manual_seed(0)
    size = max(32, min_image_size(arch) + 1)
    meta = BundleMeta(arch, ("a", "b", "c"), size, (0.5,) * 3, (0.25,) * 3)
    classifier = Classifier(build_model(arch, 3, size), meta)
    image = np.random.default_rng(0).integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    predicted = int(classifier.predict_proba(image).argmax())

    # a random network may have no positive evidence at all: the signed map shows the
    # gradient reaches the chosen layer and the map varies over the image
    heat = grad_cam(classifier, image, [predicted], positive_only=False)

    assert heat.shape == (1, size, size) and np.isfinite(heat).all()
    assert heat.min() >= 0 and heat.max() == pytest.approx(1.0) and heat.std() > 0.01
    sides = _map_sides(classifier, TARGET_LAYERS[arch])
    chosen = target_layer_name(classifier)
    assert sides[chosen] >= MIN_SIDE or sides[chosen] == max(sides.values())


def test_error_grid_draws_the_worst_errors_of_each_class(tmp_path, bundles):
    classifier = watched(bundles).classifier
    images, labels = unseen_digits()
    probs = classifier.predict_proba(images)
    wrong = probs.argmax(axis=1) != labels
    expected = sum(min(2, int(np.sum(wrong & (labels == c)))) for c in range(10))
    drawn = error_grid(classifier, images, labels, probs, 2, tmp_path / "grid.png")
    assert drawn == expected > 0
    grid = Image.open(tmp_path / "grid.png")
    rows = len({int(c) for c in labels[wrong]})
    assert grid.size[1] == rows * (128 + 14)


def test_explain_cli_writes_overlays_and_refuses_junk(tmp_path, bundles):
    project(tmp_path)  # params.yaml in the folder the commands run in
    images, _ = unseen_digits()
    paths = []
    for index in range(2):
        paths.append(tmp_path / f"digit{index}.png")
        paths[-1].write_bytes(png_bytes(images[index]))
    out = tmp_path / "out"
    result = run_cli(
        "explain",
        *map(str, paths),
        "--model",
        str(bundles["good"]),
        "--out",
        str(out),
        "--json",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    written = json.loads(result.stdout)
    assert [Image.open(w["overlay"]).size for w in written] == [(256, 142)] * 2
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image")
    params = ["--params", str(tmp_path / "params.yaml")]
    bad = CliRunner().invoke(cli, [*params, "explain", str(junk), "--model", str(bundles["good"])])
    assert bad.exit_code == 1 and "Traceback" not in bad.output
    assert bad.stderr.strip().splitlines()[-1].startswith("Error: an image could not be read")


def test_select_writes_a_ranked_folder_of_uncertain_images(tmp_path, bundles):
    config = project(tmp_path)
    model = watched(bundles)
    images, _ = unseen_digits()
    pool = tmp_path / "unlabelled"
    pool.mkdir()
    for index, image in enumerate(images[:120]):
        (pool / f"{index:03d}.png").write_bytes(png_bytes(image))
    (pool / "notes.txt").write_text("not an image")
    (pool / "broken.png").write_bytes(b"\x89PNG broken")

    summary = select_to_label(config, model, str(pool), budget=10)

    assert summary["selected"] == 10 and summary["candidates"] == 120
    assert len(summary["left_out"]) == 2
    with open(summary["csv"], newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["rank"]) for r in rows] == list(range(1, 11))
    assert all((tmp_path / "data" / "to-label").glob("*/images/*.png"))
    chosen = {int(r["source"].rsplit("/", 1)[-1][:3]) for r in rows}
    scores = uncertainty(model.classifier.predict_proba(images[:120]), "margin")
    assert np.median(scores[sorted(chosen)]) > np.median(scores)
