"""Registered versions kept on this machine (promotion.version_cache) against a real MLflow
registry (SQLite in tmp_path): loaded again without a download, a changed copy never used,
two processes filling one entry, the bound."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.exceptions import MlflowException

from tests.integration.gate.test_gate_and_registry import stored_weights, version_tags
from tests.integration.gate.test_integrity import flip_one_bit
from visionloop.artifacts.bundle import BundleDamaged, bundle_digest
from visionloop.promotion.pyfunc import download_checked
from visionloop.promotion.registry import load_champion
from visionloop.promotion.version_cache import hidden_folders


def entries(config) -> list[Path]:
    cache = config.registry.cache_folder
    return sorted(p for p in cache.iterdir() if p.is_dir() and not p.name.startswith("."))


def versions_kept(config) -> list[str]:
    return [re.fullmatch(r".*-v(\d+)-[0-9a-f]{16}", p.name)[1] for p in entries(config)]


def cached_weights(config, version: str) -> Path:
    (entry,) = [p for p in entries(config) if f"-v{version}-" in p.name]
    (weights,) = entry.glob("artifacts/*/weights.pt")
    return weights


def checked(config, version: str, fresh: bool = False):
    name = config.registry.model_name
    digest = version_tags(config, version)["bundle_sha256"]
    return download_checked(config.registry, name, version, digest, fresh)


def test_a_loaded_version_loads_again_with_the_registry_files_gone(project):
    config = project.config
    project.release("weak")  # promoting v1 downloaded it once (its smoke test)
    weights = cached_weights(config, "1")
    before = weights.stat()
    store = config.registry.artifact_dir
    store.rename(store.with_name("moved-away"))  # any download now fails
    try:
        with pytest.raises(MlflowException, match="No such artifact"):
            checked(config, "1", fresh=True)  # the registry's copy is really out of reach
        for _ in range(2):  # the drop checks, then the gate
            champion = load_champion(config)
            assert champion.version == "1" and champion.classifier.meta.classes
    finally:
        store.with_name("moved-away").rename(store)
    after = cached_weights(config, "1").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_a_changed_local_copy_is_never_used_and_is_downloaded_again(project):
    config = project.config
    project.release("weak")
    expected = version_tags(config, "1")["bundle_sha256"]
    flip_one_bit(cached_weights(config, "1"))

    _, bundle_dir, digest = checked(config, "1")
    assert digest == expected == bundle_digest(bundle_dir)  # the registry's bytes again
    assert cached_weights(config, "1").read_bytes() == stored_weights(config, "1").read_bytes()
    assert not hidden_folders(config.registry.cache_folder)

    # Changed here and in the registry: refused, and nothing is published.
    flip_one_bit(cached_weights(config, "1"))
    flip_one_bit(stored_weights(config, "1"))
    with pytest.raises(BundleDamaged, match="hash to"):
        checked(config, "1")
    assert not entries(config) and not hidden_folders(config.registry.cache_folder)


FILL = """
import json, os, sys, time
from pathlib import Path
from visionloop.config import load_config
from visionloop.promotion.pyfunc import download_checked
from visionloop.promotion.registry import DIGEST_TAG, registry_client

config = load_config(Path(sys.argv[1]))
client = registry_client(config)
name = config.registry.model_name
digest = client.get_model_version(name, "1").tags[DIGEST_TAG]
while not Path(sys.argv[2]).exists():  # every process imported and connected: go at once
    time.sleep(0.01)
folder, _, got = download_checked(config.registry, name, "1", digest)
print(json.dumps({"folder": str(folder), "inode": os.stat(folder).st_ino, "digest": got}))
"""


def test_two_processes_filling_one_entry_at_once_leave_one_good_entry(project, tmp_path):
    import shutil

    config = project.config
    project.release("weak")
    shutil.rmtree(config.registry.cache_folder)  # nobody has v1 yet
    params, go = str(project.params_file()), tmp_path / "go"
    fillers = [
        subprocess.Popen(
            [sys.executable, "-c", FILL, params, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    time.sleep(1)
    go.write_text("")
    answers = []
    for filler in fillers:
        out, err = filler.communicate(timeout=300)
        assert filler.returncode == 0, err
        answers.append(json.loads(out.strip().splitlines()[-1]))

    (entry,) = entries(config)
    assert {a["folder"] for a in answers} == {str(entry)}
    assert {a["inode"] for a in answers} == {entry.stat().st_ino}  # filled once, not replaced
    assert {a["digest"] for a in answers} == {version_tags(config, "1")["bundle_sha256"]}
    assert not hidden_folders(config.registry.cache_folder)


def test_only_the_most_recently_used_versions_are_kept(project):
    config = project.with_overrides(registry={"cache_versions": 1})
    project.release("weak", config)
    project.release("good", config)  # v2's download: v1's copy goes
    assert versions_kept(config) == ["2"]
    checked(config, "1")  # v1 used again: downloaded again, v2's copy goes
    assert versions_kept(config) == ["1"]
