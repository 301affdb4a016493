import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from visionloop.errors import VisionloopError
from visionloop.images import fit_batch
from visionloop.promotion.evaluate import classification_metrics, metric_safe, reliability_table


def one_hot_probs(predicted, n_classes, confidence):
    probs = np.full((len(predicted), n_classes), (1 - confidence) / (n_classes - 1))
    probs[np.arange(len(predicted)), predicted] = confidence
    return probs.astype(np.float32)


def test_metrics_match_a_hand_checked_example():
    labels = np.array([0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 1, 1, 1, 2, 0])
    result = classification_metrics(labels, one_hot_probs(predicted, 3, 0.8), ("x", "y", "z"))
    assert result.metrics["top1"] == pytest.approx(4 / 6)
    assert "top5" not in result.metrics  # fewer than 5 classes
    assert result.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert [row["recall"] for row in result.per_class] == [0.5, 1.0, 0.5]
    assert result.per_class[1]["precision"] == pytest.approx(2 / 3)
    assert result.most_confused == [
        {"true": "z", "predicted": "x", "count": 1},
        {"true": "x", "predicted": "y", "count": 1},
    ]
    # Every prediction says 0.8 but only 4/6 are right: ECE is the gap.
    assert result.metrics["ece"] == pytest.approx(0.8 - 4 / 6, abs=1e-6)


def test_top5_appears_with_five_classes_or_more():
    labels = np.arange(6)
    probs = one_hot_probs((labels + 1) % 6, 6, 0.5)
    probs[labels, labels] = 0.3  # second choice: right within the top 5, wrong at top 1
    probs /= probs.sum(axis=1, keepdims=True)
    result = classification_metrics(labels, probs, tuple("abcdef"))
    assert result.metrics["top1"] == 0 and result.metrics["top5"] == 1.0


def test_reliability_puts_full_confidence_in_the_last_bin():
    table = reliability_table(np.array([1.0, 0.05, 0.55]), np.array([True, False, True]), 10)
    assert [row["count"] for row in table] == [1, 0, 0, 0, 0, 1, 0, 0, 0, 1]
    assert table[-1]["accuracy"] == 1.0 and table[0]["accuracy"] == 0.0


def test_metric_names_are_made_safe_for_mlflow():
    assert metric_safe("cat:tabby (big)") == "cat_tabby _big_"


def test_fit_batch_resizes_only_when_needed():
    batch = np.zeros((2, 8, 8, 3), dtype=np.uint8)
    assert fit_batch(batch, 8) is batch
    assert fit_batch(batch, 16).shape == (2, 16, 16, 3)


def png(size, mode="RGBA", color=(255, 0, 0, 0)) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def test_pyfunc_input_accepts_encoded_bytes_and_uint8_arrays():
    from visionloop.promotion.pyfunc import to_image_batch

    frame = pd.DataFrame({"image": [png((10, 12)), png((4, 4), "L", 0)]})
    batch = to_image_batch(frame, 16)
    assert batch.shape == (2, 16, 16, 3) and batch.dtype == np.uint8
    assert batch[0].min() == 255  # transparent pixels composited on white, as at ingest
    assert batch[1].max() == 0
    arrays = to_image_batch(np.zeros((3, 16, 16, 3), dtype=np.uint8), 16)
    assert arrays.shape == (3, 16, 16, 3)
    with pytest.raises(ValueError, match="column 'image'"):
        to_image_batch(pd.DataFrame({"pixels": [b""]}), 16)
    with pytest.raises(ValueError, match="uint8"):
        to_image_batch(np.zeros((1, 16, 16, 3), dtype=np.float32), 16)


def test_model_and_test_split_must_agree_on_classes_and_size():
    from visionloop.artifacts.bundle import BundleMeta
    from visionloop.artifacts.prepared import PreparedSplit
    from visionloop.promotion.evaluate import check_compatible

    meta = BundleMeta("simple_cnn", ("a", "b"), 16, (0.5,) * 3, (0.25,) * 3)
    images = np.zeros((2, 16, 16, 3), dtype=np.uint8)
    check_compatible(PreparedSplit(images, np.array([0, 1]), ("h0", "h1")), meta)
    with pytest.raises(VisionloopError, match="different class maps"):
        check_compatible(PreparedSplit(images, np.array([0, 2]), ("h0", "h1")), meta)
    with pytest.raises(VisionloopError, match="32 px but the model expects 16 px"):
        check_compatible(
            PreparedSplit(np.zeros((2, 32, 32, 3), np.uint8), np.array([0, 1]), ("h0", "h1")), meta
        )


def test_stages_say_which_earlier_stage_is_missing(tmp_path):
    from tests.helpers import REPO_PARAMS
    from visionloop.artifacts.prepared import write_prepared_split
    from visionloop.config import load_config
    from visionloop.pipeline.stages import run_stage

    config = load_config(
        REPO_PARAMS,
        overrides={"train": {"dir": str(tmp_path / "c")}, "prepare": {"dir": str(tmp_path / "p")}},
    )
    for stage in ("evaluate", "gate"):
        with pytest.raises(VisionloopError, match="run the prepare stage first"):
            run_stage(stage, config)
    images = np.zeros((1, 16, 16, 3), dtype=np.uint8)
    write_prepared_split(config.prepare.dir, "test", images, np.array([0]), ["h0"])
    for stage in ("evaluate", "gate"):
        with pytest.raises(VisionloopError, match="run the train stage first"):
            run_stage(stage, config)
