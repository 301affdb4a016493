import os
import subprocess
import sys
import time

import pytest

from tests.helpers import REPO_PARAMS
from visionloop.config import load_config
from visionloop.data.arrivals import complete_drops, is_complete, mark_announced, unannounced
from visionloop.locking import AlreadyRunning, exclusive


def test_second_holder_is_refused_and_the_lock_frees_on_exit(tmp_path):
    lock = tmp_path / "retrain.lock"
    refused = rf"another retraining is running \(pid {os.getpid()}"
    with (
        exclusive(lock, "retraining"),
        pytest.raises(AlreadyRunning, match=refused),
        exclusive(lock, "retraining"),
    ):
        pass
    with exclusive(lock, "retraining"):
        assert lock.read_text().strip() == str(os.getpid())


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / "retrain.lock"
    code = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from visionloop.locking import exclusive\n"
        "with exclusive(Path(sys.argv[1]), 'retraining'):\n"
        "    print('held', flush=True)\n"
        "    time.sleep(60)\n"
    )
    holder = subprocess.Popen([sys.executable, "-c", code, str(lock)], stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"held"
    with pytest.raises(AlreadyRunning), exclusive(lock, "retraining"):
        pass
    holder.kill()
    holder.wait()
    with exclusive(lock, "retraining"):
        pass  # the kernel released the dead holder's lock


def make_drop(root, name, files=("a/1.png",), age=0.0):
    drop = root / name
    for rel in files:
        path = drop / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x")
    stamp = time.time() - age
    for path in [drop, *drop.rglob("*")]:
        os.utime(path, (stamp, stamp))
    return drop


def test_a_drop_is_complete_when_marked_ready_or_quiet_long_enough(tmp_path):
    quiet = make_drop(tmp_path, "quiet", age=120)
    copying = make_drop(tmp_path, "copying", age=0)
    marked = make_drop(tmp_path, "marked", files=("a/1.png", "READY"), age=0)
    assert is_complete(quiet, settle_seconds=60)
    assert not is_complete(copying, settle_seconds=60)
    assert is_complete(marked, settle_seconds=60)


def test_complete_drops_skips_uploads_in_progress_and_hidden_entries(tmp_path):
    config = load_config(
        REPO_PARAMS,
        overrides={"data": {"incoming_dir": str(tmp_path)}, "flows": {"settle_seconds": 60}},
    )
    quiet = make_drop(tmp_path, "quiet", age=120)
    make_drop(tmp_path, "copying", age=0)
    archive = tmp_path / "old.zip"
    archive.write_bytes(b"PK")
    os.utime(archive, (time.time() - 120, time.time() - 120))
    (tmp_path / "new.zip.part").write_bytes(b"PK")
    (tmp_path / ".done").mkdir()
    assert complete_drops(config) == [archive, quiet]


def test_each_drop_is_announced_once_until_it_changes(tmp_path):
    incoming, state = tmp_path / "incoming", tmp_path / "state" / "announced.json"
    drop = make_drop(incoming, "d1", age=120)
    assert unannounced([drop], state) == [drop]
    mark_announced([drop], state)
    assert unannounced([drop], state) == []
    make_drop(incoming, "d1", files=("a/1.png", "b/2.png"), age=100)  # re-copied, bigger
    assert unannounced([drop], state) == [drop]
