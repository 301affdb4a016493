import numpy as np
import pytest
import torch

from visionloop.artifacts.bundle import BundleMeta, save_bundle
from visionloop.artifacts.prepared import open_prepared_split, write_prepared_split
from visionloop.models.classifier import load_bundle
from visionloop.models.zoo import build_model


def test_prepared_split_round_trip_is_memory_mapped(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    write_prepared_split(tmp_path, "train", images, np.arange(5), [f"h{i}" for i in range(5)])
    split = open_prepared_split(tmp_path, "train")
    assert isinstance(split.images, np.memmap)
    assert np.array_equal(split.images, images) and split.labels.tolist() == [0, 1, 2, 3, 4]
    assert split.sha256 == ("h0", "h1", "h2", "h3", "h4") and len(split) == 5
    assert [p.name for p in tmp_path.iterdir()] == ["train"]  # no staging left behind


def test_prepared_split_rejects_wrong_dtype(tmp_path):
    with pytest.raises(ValueError, match="uint8"):
        write_prepared_split(tmp_path, "val", np.zeros((1, 4, 4, 3)), np.zeros(1), ["h"])


def test_bundle_round_trip_predicts_the_same_probabilities(tmp_path):
    torch.manual_seed(0)
    module = build_model("simple_cnn", num_classes=3, image_size=16)
    meta = BundleMeta("simple_cnn", ("a", "b", "c"), 16, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    images = np.random.default_rng(1).integers(0, 256, (7, 16, 16, 3), dtype=np.uint8)
    save_bundle(tmp_path / "bundle", module, meta)

    loaded = load_bundle(tmp_path / "bundle")
    expected = torch.softmax(module.eval()(loaded.to_input(images)), dim=1).detach().numpy()
    probs = loaded.predict_proba(images, batch_size=3)
    assert loaded.meta == meta
    assert probs.shape == (7, 3) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)
    assert np.allclose(probs, expected, atol=1e-6)
    with pytest.raises(ValueError, match=r"\(N, 16, 16, 3\)"):
        loaded.predict_proba(images[:, :8])


def test_unknown_architecture_names_the_choices():
    with pytest.raises(ValueError, match="choose one of alexnet"):
        build_model("resnet999", num_classes=2, image_size=32)


def test_a_killed_fresh_training_never_lends_its_run_to_the_previous_bundle(tmp_path):
    """Issue 15: run.json was rewritten when a training started; killed, evaluate and
    register attached the previous model to the killed run."""
    from visionloop.artifacts import candidate

    candidate.write_run_record(tmp_path, "run-a", None, "digest-a")  # A trained and saved
    assert candidate.read_run_id(tmp_path, "digest-a") == "run-a"
    candidate.write_run_record(tmp_path, "run-b", None)  # B started ... and was killed
    assert candidate.read_run_id(tmp_path, "digest-a") is None  # A is not B's model
    assert candidate.read_run_id(tmp_path) == "run-b"  # (what a resumed B continues)
    candidate.write_run_record(tmp_path, "run-b", 1, "digest-b")
    assert candidate.read_run_id(tmp_path, "digest-b") == "run-b"
