"""`visionloop reproduce --version N` in a real git + DVC project of demo digits: a registered
version rebuilt from its lineage (data from the DVC remote) is bit-identical; a version that
does not exist, an unknown commit, and data garbage-collected everywhere are one line each."""

from __future__ import annotations

import json
import shutil

import pytest

from tests.digits import digits_rgb
from tests.project import make_repo
from tests.rawdata import write_drop

PER_CLASS = 8


def digits_drop(per_class: int):
    """The demo's digits (16 px, as RGB images), `per_class` of each."""
    from PIL import Image

    images, labels = digits_rgb(16)
    taken: dict[int, int] = {}
    for image, label in zip(images, labels.tolist(), strict=True):
        if taken.get(label, 0) < per_class:
            taken[label] = taken.get(label, 0) + 1
            yield str(label), Image.fromarray(image)


@pytest.mark.slow
def test_a_registered_version_is_rebuilt_bit_identical_and_lost_lineage_is_one_line(tmp_path):
    repo = make_repo(tmp_path, seeds=None)
    repo.env.update(OMP_NUM_THREADS="1")
    repo.env.pop("MLFLOW_TRACKING_URI", None)
    write_drop(repo.path / "data" / "incoming" / "digits", digits_drop(PER_CLASS))
    repo.run("visionloop", "data", "ingest", "--allow-new-classes", "digits")
    repo.commit("ingest digits")
    repo.run("dvc", "repro", "train")
    repo.commit("train")
    registered = repo.run_json("visionloop", "models", "register", "--no-promote")
    version = registered["version"]
    repo.run("dvc", "push")
    # Only the remote has the data now: reproduce must fetch it from there.
    shutil.rmtree(repo.path / ".dvc" / "cache")

    outcome = repo.run_json("visionloop", "reproduce", "--version", version, "--json")
    assert outcome["verdict"] == "identical" and outcome["reproduced"]
    assert outcome["tensors"] > 0 and outcome["tensors_differing"] == []
    assert all(old == new and old is not None for old, new in outcome["metrics"].values())
    assert outcome["reasons"] == []
    assert outcome["lineage"]["git.commit"] and outcome["lineage"]["data.raw_md5"]
    assert outcome["lineage"]["train.seed"] == "0"
    report = repo.path / "reports" / "reproduce" / f"visionloop-classifier-v{version}.md"
    assert f"v{version} reproduced: bit-identical weights" in report.read_text()

    import mlflow

    # both URIs given: an earlier test in this process may have set a registry URI globally
    store = f"sqlite:///{repo.path}/mlruns/mlflow.db"
    client = mlflow.MlflowClient(tracking_uri=store, registry_uri=store)
    model_version = client.get_model_version("visionloop-classifier", version)
    assert {"lineage.params_yaml_sha256", "lineage.dvc_lock_sha256", "env.torch"} <= set(
        model_version.tags
    )
    run = client.get_run(model_version.run_id)
    assert run.info.run_name == f"train project-001 v{version}"
    assert {a.path for a in client.list_artifacts(run.info.run_id, "lineage")} == {
        "lineage/params.yaml",
        "lineage/dvc.lock",
    }

    missing = repo.call("visionloop", "reproduce", "--version", "99")
    assert missing.returncode == 2
    assert missing.stderr.strip() == (
        "Error: visionloop-classifier has no version 99 (`visionloop models list` shows them)"
    )

    client.set_model_version_tag("visionloop-classifier", version, "git.commit", "f" * 40)
    unknown = repo.call("visionloop", "reproduce", "--version", version)
    assert unknown.returncode == 1 and len(unknown.stderr.strip().splitlines()) == 1
    assert f"which {repo.path} does not have" in unknown.stderr
    commit = outcome["lineage"]["git.commit"]
    client.set_model_version_tag("visionloop-classifier", version, "git.commit", commit)

    # garbage-collected everywhere (the first reproduce fetched it into the cache again)
    shutil.rmtree(tmp_path / "visionloop-dvc-remote")
    shutil.rmtree(repo.path / ".dvc" / "cache")
    gone = repo.call("visionloop", "reproduce", "--version", version)
    assert gone.returncode == 1, gone.stderr
    assert len(gone.stderr.strip().splitlines()) == 1 and "Traceback" not in gone.stderr
    assert "the data version is in no DVC cache or remote" in gone.stderr
    assert json.loads(report.with_suffix(".json").read_text())["verdict"] == "identical"
