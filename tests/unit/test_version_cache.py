"""The local copies of registered versions, on the filesystem with stand-in downloads (the
registry itself: tests/integration/gate/test_version_cache.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from visionloop.promotion.version_cache import checked, entry_name, hidden_folders


def test_entries_of_other_servers_models_versions_or_digests_never_meet():
    base = ("http://127.0.0.1:5000", "visionloop-classifier", "3", "ab" * 32)
    names = {entry_name(*base)}
    for i, other in enumerate(("sqlite:///other.db", "other-model", "4", "cd" * 32)):
        names.add(entry_name(*base[:i], other, *base[i + 1 :]))
    assert len(names) == 5
    assert entry_name(*base).startswith("visionloop-classifier-v3-")
    assert "/" not in entry_name("http://x", "team/../model", "1", None)


class Registry:
    """Downloads that write a file named after the version; `check` wants its text intact."""

    def __init__(self) -> None:
        self.downloads = 0

    def fill_for(self, version: str):
        def fill(folder: Path) -> None:
            self.downloads += 1
            (folder / "weights").write_text(version)

        return fill

    @staticmethod
    def check_for(version: str):
        def check(folder: Path) -> Path:
            if (folder / "weights").read_text() != version:
                raise ValueError(f"v{version} damaged")
            return folder

        return check


def use(cache: Path, registry: Registry, version: str, keep: int = 2, fresh: bool = False):
    fill, check = registry.fill_for(version), Registry.check_for(version)
    return checked(cache, keep, f"m-v{version}", fill, check, fresh)


def test_a_copy_is_downloaded_once_and_a_changed_one_again(tmp_path):
    registry = Registry()
    entry = use(tmp_path, registry, "1")
    assert use(tmp_path, registry, "1") == entry and registry.downloads == 1
    (entry / "weights").write_text("tampered")
    assert use(tmp_path, registry, "1") == entry and registry.downloads == 2
    assert (entry / "weights").read_text() == "1"
    use(tmp_path, registry, "1", fresh=True)  # the registry's copy checked, the entry kept
    assert registry.downloads == 3 and (entry / "weights").read_text() == "1"
    assert not hidden_folders(tmp_path)


def test_a_download_that_fails_its_check_is_never_published(tmp_path):
    registry = Registry()

    def damaged(folder: Path) -> None:
        (folder / "weights").write_text("flipped")

    with pytest.raises(ValueError, match="v1 damaged"):
        checked(tmp_path, 2, "m-v1", damaged, Registry.check_for("1"))
    assert not (tmp_path / "m-v1").exists() and not hidden_folders(tmp_path)
    use(tmp_path, registry, "1")
    assert (tmp_path / "m-v1" / "weights").read_text() == "1"


def test_a_killed_fill_leaves_a_staging_folder_the_next_fill_clears(tmp_path):
    (tmp_path / ".m-v1.abc123").mkdir()  # what a SIGKILL during a download leaves
    (tmp_path / ".m-v1.abc123" / "weights").write_text("half")
    use(tmp_path, Registry(), "1")
    assert not hidden_folders(tmp_path)


def test_the_most_recently_used_copies_are_kept(tmp_path):
    registry = Registry()
    for version in ("1", "2"):
        use(tmp_path, registry, version)
    for version, age in (("1", 120), ("2", 60)):  # v1 the older (seconds, not clock ticks)
        then = (tmp_path / f"m-v{version}").stat().st_mtime - age
        os.utime(tmp_path / f"m-v{version}", (then, then))
    use(tmp_path, registry, "1")  # used again: now the newer
    use(tmp_path, registry, "3")
    kept = sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith("."))
    assert kept == ["m-v1", "m-v3"] and registry.downloads == 3
