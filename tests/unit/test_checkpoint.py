import logging

import torch

from visionloop.training.checkpoint import (
    checkpoint_path,
    list_checkpoints,
    load_latest_checkpoint,
    save_checkpoint,
)


def state(epoch):
    return {"epoch": epoch, "weights": torch.full((3,), float(epoch)), "history": [0.5] * epoch}


def test_round_trip_keeps_the_newest_two_and_leaves_no_temporary_files(tmp_path):
    for epoch in (1, 2, 3):
        save_checkpoint(tmp_path, epoch, state(epoch), keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["epoch-0003.pt", "epoch-0002.pt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "epoch-0002.pt",
        "epoch-0002.pt.sha256",
        "epoch-0003.pt",
        "epoch-0003.pt.sha256",
    ]
    path, loaded = load_latest_checkpoint(tmp_path)
    assert path.name == "epoch-0003.pt" and loaded["epoch"] == 3
    assert torch.equal(loaded["weights"], torch.full((3,), 3.0))


def test_a_corrupt_latest_checkpoint_falls_back_to_the_previous_with_a_warning(tmp_path, caplog):
    for epoch in (1, 2):
        save_checkpoint(tmp_path, epoch, state(epoch))
    latest = checkpoint_path(tmp_path, 2)
    data = bytearray(latest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    latest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        path, loaded = load_latest_checkpoint(tmp_path)
    assert path.name == "epoch-0001.pt" and loaded["epoch"] == 1
    assert "epoch-0002.pt: sha256 does not match" in caplog.text


def test_a_checkpoint_without_its_sidecar_is_not_trusted(tmp_path, caplog):
    save_checkpoint(tmp_path, 1, state(1))
    save_checkpoint(tmp_path, 2, state(2))
    (tmp_path / "epoch-0002.pt.sha256").unlink()  # a crash between the two writes
    with caplog.at_level(logging.WARNING):
        assert load_latest_checkpoint(tmp_path)[1]["epoch"] == 1
    assert "interrupted while saving" in caplog.text


def test_no_checkpoint_at_all(tmp_path):
    assert load_latest_checkpoint(tmp_path / "missing") is None
    save_checkpoint(tmp_path, 1, state(1))
    checkpoint_path(tmp_path, 1).write_bytes(b"")
    assert load_latest_checkpoint(tmp_path) is None


class Payload:
    """Any object but tensors and containers: weights_only=True refuses to unpickle it."""

    def __reduce__(self):
        return (print, ("a pickle payload ran",))


def test_a_checkpoint_holding_a_pickle_payload_falls_back_without_running_it(
    tmp_path, caplog, capsys
):
    """Issue 15: with a valid sidecar, a 47-line UnpicklingError traceback on --resume."""
    save_checkpoint(tmp_path, 1, state(1))
    save_checkpoint(tmp_path, 2, {**state(2), "extra": Payload()})  # its sidecar is valid
    with caplog.at_level(logging.WARNING):
        path, loaded = load_latest_checkpoint(tmp_path)
    assert path.name == "epoch-0001.pt" and loaded["epoch"] == 1
    assert "skipping checkpoint" in caplog.text and "epoch-0002.pt" in caplog.text
    assert "a pickle payload ran" not in capsys.readouterr().out
