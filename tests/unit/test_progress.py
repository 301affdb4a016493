import pytest

from visionloop.progress import Progress

METRICS = {
    "train_loss": 0.5,
    "train_accuracy": 0.8,
    "val_loss": 0.4,
    "val_accuracy": 0.9,
    "lr": 0.001,
    "images_per_s": 1234.0,
    "epoch_time_s": 1.5,
}


@pytest.mark.parametrize("mode", ["auto", "lines", "bar"])
def test_epoch_lines_go_to_stderr_and_stdout_stays_for_the_summary(mode, capsys):
    with Progress(mode) as progress:
        progress.start_epoch(1, 2, steps=3)
        for _ in range(3):
            progress.advance()
        progress.epoch_done(1, 2, METRICS, "  *")
    out, err = capsys.readouterr()
    assert out == ""
    assert "epoch 1/2  train_loss 0.5000" in err and "val_acc 0.9000" in err
    assert "1234 img/s" in err
    if mode == "auto":  # pytest's stderr is not a terminal
        assert progress.mode == "lines"


def test_off_and_other_ranks_print_nothing(capsys):
    for progress in (Progress("off"), Progress("lines", enabled=False)):
        with progress:
            progress.epoch_done(1, 1, METRICS)
            progress.message("hello")
    assert capsys.readouterr() == ("", "")


def test_the_bar_spans_the_whole_run_with_the_running_loss():
    import torch

    with Progress("bar") as progress:
        progress.start_epoch(2, 3, steps=4)  # a run resumed after its first epoch
        progress.advance(torch.tensor(0.25))
        (task,) = progress._bar.tasks
        assert (task.total, task.completed) == (12, 5)  # the ETA is to the last epoch
        assert task.fields["status"] == "loss 0.2500" and task.description == "epoch 2/3"
        for _ in range(3):
            progress.advance(torch.tensor(0.5))
        progress.start_epoch(3, 3, steps=4)
        (task,) = progress._bar.tasks
        assert task.completed == 8 and task.description == "epoch 3/3"
