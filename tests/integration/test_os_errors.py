"""OS errors a user's machine causes end as one line with the path and what to do, and
nothing half-written (issue 15)."""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.ingest_corpus import assert_store_consistent, manifest, project, valid_drop
from visionloop.data.ingest import ingest_drops
from visionloop.errors import OS_ERROR_ADVICE, os_error_line


@pytest.mark.parametrize("code", sorted(OS_ERROR_ADVICE))
def test_each_known_os_error_is_one_line_with_its_path_and_advice(code):
    wrapped = RuntimeError("enforce fail at inline_container.cc: unexpected pos")
    wrapped.__cause__ = OSError(code, os.strerror(code), "/data/raw/x.tar")
    for exc in (OSError(code, os.strerror(code), "/data/raw/x.tar"), wrapped):
        line = os_error_line(exc)
        assert line is not None and "\n" not in line
        assert "/data/raw/x.tar" in line and os.strerror(code) in line
    assert os_error_line(OSError(errno.ENOENT, "gone", "/x")) is None  # not a machine fault


def other_filesystem() -> Path | None:
    """A folder on another filesystem than the tests' tmp folders (/dev/shm), if there is one."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tempfile.gettempdir()).st_dev:
        return None
    return Path(tempfile.mkdtemp(prefix="visionloop-exdev-", dir=shm))


def test_ingest_with_reports_and_quarantine_on_another_filesystem(tmp_path):
    """The issue's wedge: EXDEV after images, manifest and ledger were written, every rerun."""
    elsewhere = other_filesystem()
    if elsewhere is None:
        pytest.skip("no second filesystem (/dev/shm) to move across")
    try:
        config = project(
            tmp_path,
            quarantine_dir=str(elsewhere / "quarantine"),
            ingest={"report_dir": str(elsewhere / "reports"), "done_dir": str(elsewhere / "done")},
        )
        drop = valid_drop(config.data.incoming_dir / "first")
        (drop / "cat" / "junk.png").write_bytes(b"not an image")
        (outcome,) = ingest_drops(config).drops
        assert outcome.status == "ingested" and outcome.quarantined == {"not_an_image": 1}
        assert len(manifest(config)) == 6
        assert_store_consistent(config)
        assert list((elsewhere / "reports").glob("*.json"))
        assert (elsewhere / "done" / "first" / "cat").is_dir() and not drop.exists()
        assert not list(config.data.ingest.work_dir.glob("commit-*"))
    finally:
        shutil.rmtree(elsewhere, ignore_errors=True)
