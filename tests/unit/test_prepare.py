import hashlib
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import REPO_PARAMS
from tests.rawdata import add_drop, pattern_image
from visionloop.artifacts.prepared import SPLITS, open_prepared_split
from visionloop.artifacts.split_table import read_split
from visionloop.config import load_config
from visionloop.data.prepare import run as run_prepare
from visionloop.data.splits import run as run_split
from visionloop.errors import VisionloopError
from visionloop.images import ALPHA_BACKGROUND, fit_square, load_for_model


def make_config(tmp_path, **prepare):
    shutil.copy(REPO_PARAMS, tmp_path / "params.yaml")
    overrides = {
        "data": {"dvc": {"track": False}},
        "prepare": {"image_size": 16, **prepare},
    }
    return load_config(tmp_path / "params.yaml", overrides)


def mixed_images(seeds):
    """Non-square, grey and RGBA images, so decoding and resizing both have work to do."""
    out = []
    for seed in seeds:
        image = pattern_image(seed, size=40).resize((40, 24))
        image = [image, image.convert("L"), image.convert("RGBA")][seed % 3]
        out.append((["cat", "dog"][seed % 2], image))
    return out


def prepared_dataset(tmp_path, **prepare):
    config = make_config(tmp_path, **prepare)
    add_drop(config, "d1", mixed_images(range(30)))
    run_split(config)
    return config


def original_files(config, drop="d1"):
    """sha256 -> the drop's own file (moved to the done folder by ingest)."""
    folder = config.data.ingest.done_dir / drop
    return {hashlib.sha256(p.read_bytes()).hexdigest(): p for p in folder.rglob("*.png")}


def test_prepared_tensors_equal_a_direct_decode_and_labels_follow_the_class_map(tmp_path):
    """Read from the shards, the tensors are byte for byte those of the drop's own files."""
    config = prepared_dataset(tmp_path)
    summary = run_prepare(config)
    assert summary["decoded"] == 30 and summary["from_cache"] == 0
    classes = json.loads((config.data.raw_dir / "classes.json").read_text())["classes"]
    rows = {row.sha256: row for row in read_split(config.split.dir)}
    paths = original_files(config)
    assert set(paths) == set(rows) and not list(config.data.raw_dir.rglob("*.png"))
    for split in SPLITS:
        prepared = open_prepared_split(config.prepare.dir, split)
        assert isinstance(prepared.images, np.memmap)
        assert prepared.sha256 == tuple(s for s, r in rows.items() if r.split == split)
        for image, label, sha in zip(
            prepared.images, prepared.labels, prepared.sha256, strict=True
        ):
            assert np.array_equal(image, load_for_model(paths[sha], 16, "crop"))
            assert classes[label] == rows[sha].label


def test_a_rerun_decodes_nothing_and_a_new_drop_decodes_only_its_images(tmp_path):
    config = prepared_dataset(tmp_path)
    run_prepare(config)
    first = open_prepared_split(config.prepare.dir, "train").images.copy()
    shutil.rmtree(config.prepare.dir)  # what DVC does to a stage's outs before a rerun
    again = run_prepare(config)
    assert again["decoded"] == 0 and again["from_cache"] == 30
    assert np.array_equal(open_prepared_split(config.prepare.dir, "train").images, first)

    add_drop(config, "d2", mixed_images(range(100, 110)))
    run_split(config)
    assert run_prepare(config)["decoded"] == 10


def test_a_different_size_does_not_reuse_the_cache(tmp_path):
    config = prepared_dataset(tmp_path)
    run_prepare(config)
    bigger = make_config(tmp_path, image_size=24)
    assert run_prepare(bigger)["decoded"] == 30
    assert open_prepared_split(bigger.prepare.dir, "val").images.shape[1:] == (24, 24, 3)


def test_stats_are_the_train_mean_and_std_per_channel(tmp_path):
    config = prepared_dataset(tmp_path)
    run_prepare(config)
    stats = json.loads((config.prepare.dir / "stats.json").read_text())
    pixels = open_prepared_split(config.prepare.dir, "train").images.reshape(-1, 3) / 255.0
    assert np.allclose(stats["mean"], pixels.mean(axis=0), atol=1e-5)
    assert np.allclose(stats["std"], pixels.std(axis=0), atol=1e-5)
    assert stats["classes"] == ["cat", "dog"] and stats["image_size"] == 16


def test_a_label_missing_from_the_class_map_is_a_user_error(tmp_path):
    config = prepared_dataset(tmp_path)
    (config.data.raw_dir / "classes.json").write_text('{"version": 1, "classes": ["cat"]}')
    with pytest.raises(VisionloopError, match=r"not in classes\.json"):
        run_prepare(config)


def test_fit_square_rules():
    wide = Image.new("RGB", (40, 20), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 10, 20))  # a blue band on the left quarter
    crop = np.asarray(fit_square(wide, 10, "crop"))
    assert crop.shape == (10, 10, 3) and (crop[..., 0] > 200).all()  # centre: all red
    pad = np.asarray(fit_square(wide, 10, "pad"))
    assert tuple(pad[0, 5]) == ALPHA_BACKGROUND and pad[5, 5, 0] > 200
    stretch = np.asarray(fit_square(wide, 10, "stretch"))
    assert stretch[5, 0, 2] > 200 and stretch[5, 9, 0] > 200  # both ends kept
    assert fit_square(wide.resize((10, 10)), 10, "crop").size == (10, 10)
    with pytest.raises(ValueError, match="resize mode"):
        fit_square(wide, 10, "zoom")


def test_decoding_in_worker_processes_gives_the_tensors_of_the_drop_files(tmp_path):
    """More images than one chunk: split and prepare read the shards in two worker processes;
    the tensors are still byte for byte those of the drop's own files, in split order."""
    config = make_config(tmp_path, workers=2)
    add_drop(config, "d1", mixed_images(range(300)))
    run_split(config)
    assert run_prepare(config)["decoded"] == 300
    paths = original_files(config)
    for split in SPLITS:
        prepared = open_prepared_split(config.prepare.dir, split)
        expected = [load_for_model(paths[sha], 16, "crop") for sha in prepared.sha256]
        assert np.array_equal(prepared.images, np.stack(expected))


def test_auto_image_size_comes_from_the_recipe_and_its_facts_go_to_stats(tmp_path):
    config = prepared_dataset(tmp_path, image_size="auto")  # 40x24 sources, a third grey
    summary = run_prepare(config)
    assert summary["image_size"] == 32 and "upscaled to 32" in summary["image_size_reason"]
    stats = json.loads((config.prepare.dir / "stats.json").read_text())
    assert stats["image_size"] == 32
    facts = stats["facts"]
    assert facts["short_side"] == 24 and facts["classes"] == 2
    assert sum(facts["train_per_class"]) == len(open_prepared_split(config.prepare.dir, "train"))
    assert open_prepared_split(config.prepare.dir, "train").images.shape[1:] == (32, 32, 3)
