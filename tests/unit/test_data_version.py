import subprocess

import yaml

from visionloop.config import load_config
from visionloop.training.mlflow_run import data_version


def test_data_version_reads_dvc_hashes_and_the_git_commit(tmp_path):
    params = {"data": {"raw_dir": "data/raw"}, "split": {"dir": "data/splits"}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    (tmp_path / "data" / "splits").mkdir(parents=True)
    (tmp_path / "data" / "splits" / "split.csv").write_text("sha256,label,split\n")
    (tmp_path / "data" / "raw.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": "abc.dir", "path": "raw"}]})
    )
    lock = {"stages": {"split": {"outs": [{"path": "data/splits/split.csv", "md5": "f00"}]}}}
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    config = load_config(tmp_path / "params.yaml")
    assert "git.commit" not in data_version(config)  # not a git repository

    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "commit", "-q", "--allow-empty", "-m", "x"], check=True)
    tags = data_version(config)
    assert tags["data.raw_md5"] == "abc.dir" and tags["data.split_md5"] == "f00"
    assert len(tags["data.split_sha256"]) == 64 and len(tags["git.commit"]) == 40


def test_git_dirty_counts_code_changes_not_the_files_the_pipeline_writes(tmp_path):
    from visionloop.tracking import git_state

    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "train.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("stages: {}\n")
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-q", "-m", "x"], check=True)
    assert git_state(tmp_path).dirty is False

    # what a pipeline run leaves behind: a new lock, a .dvc file, DVC's .gitignore entries
    (tmp_path / "dvc.lock").write_text("stages: {split: {}}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.dvc").write_text("outs: []\n")
    (tmp_path / "data" / ".gitignore").write_text("/raw\n")
    assert git_state(tmp_path).dirty is False

    (tmp_path / "train.py").write_text("x = 2\n")
    assert git_state(tmp_path).dirty is True
    (tmp_path / "train.py").write_text("x = 1\n")
    (tmp_path / "data" / "notes.txt").write_text("a new file is a change too\n")
    assert git_state(tmp_path).dirty is True
