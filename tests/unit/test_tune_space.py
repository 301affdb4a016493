"""The params.yaml patch of `visionloop tune`: values replaced in place, comments kept."""

from __future__ import annotations

import yaml

from tests.helpers import REPO_PARAMS
from visionloop.experiments.space import patched_text


def test_the_patch_replaces_exactly_the_tuned_values_and_keeps_every_comment():
    text = REPO_PARAMS.read_text()
    values = {"train.lr": 0.000731, "train.augment.mixup_alpha": 0.2, "train.batch_size": 32}
    patched = patched_text(text, values)

    before, after = text.splitlines(), patched.splitlines()
    assert len(before) == len(after)
    changed = [(a, b) for a, b in zip(before, after, strict=True) if a != b]
    assert len(changed) == 3
    for old, new in changed:  # the comment after each value is still there, at its column
        assert old.split("#", 1)[1] == new.split("#", 1)[1]
        assert old.index("#") == new.index("#")
    loaded, original = yaml.safe_load(patched), yaml.safe_load(text)
    assert loaded["train"]["lr"] == 0.000731 and loaded["train"]["batch_size"] == 32
    assert loaded["train"]["augment"]["mixup_alpha"] == 0.2
    original["train"].update(lr=0.000731, batch_size=32)
    original["train"]["augment"]["mixup_alpha"] = 0.2
    assert loaded == original


def test_a_key_the_file_lacks_is_added_under_its_section():
    text = "train:\n  lr: 0.1  # peak\n  augment:\n    hflip: true\nevaluate:\n  dir: x\n"
    patched = patched_text(text, {"train.augment.cutmix_alpha": 0.5, "train.seed": 3})
    loaded = yaml.safe_load(patched)
    assert loaded["train"]["augment"] == {"hflip": True, "cutmix_alpha": 0.5}
    assert loaded["train"]["seed"] == 3 and loaded["evaluate"] == {"dir": "x"}


def test_the_study_storage_is_derived_from_the_tracking_store(tmp_path, monkeypatch):
    from visionloop.config import load_config
    from visionloop.experiments.storage import study_storage_url, without_password

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    params = tmp_path / "params.yaml"
    params.write_text("registry: {tracking_uri: 'sqlite:///mlruns/mlflow.db'}\n")
    # beside the tracking database, never in it (both keep an alembic_version table)
    assert study_storage_url(load_config(params)) == f"sqlite:///{tmp_path}/mlruns/optuna.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "postgresql+psycopg://u:secret@127.0.0.1:5433/mlflow")
    assert study_storage_url(load_config(params)).endswith("@127.0.0.1:5433/optuna")
    params.write_text("tune: {storage: 'sqlite:////elsewhere/studies.db'}\n")
    assert study_storage_url(load_config(params)) == "sqlite:////elsewhere/studies.db"
    assert without_password("postgresql://u:secret@h:1/optuna") == "postgresql://u:***@h:1/optuna"
