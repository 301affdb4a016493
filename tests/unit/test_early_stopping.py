import pytest

from visionloop.training.early_stopping import EarlyStopping


def first_stop(values, mode="max", patience=3, min_delta=0.0):
    """(stop epoch, best epoch) for a metric sequence, epochs numbered from 1."""
    early = EarlyStopping(mode, patience, min_delta)
    for epoch, value in enumerate(values, start=1):
        early.update(value, epoch)
        if early.should_stop:
            return epoch, early.best_epoch
    return None, early.best_epoch


def test_stops_after_patience_epochs_without_improvement():
    assert first_stop([0.5, 0.7, 0.9, 0.8, 0.9, 0.85, 0.95]) == (6, 3)


def test_an_improvement_resets_the_count():
    assert first_stop([0.5, 0.6, 0.55, 0.55, 0.7, 0.6, 0.6, 0.6]) == (8, 5)


def test_min_delta_ignores_tiny_gains():
    values = [0.90, 0.905, 0.909, 0.91]
    assert first_stop(values, patience=3, min_delta=0.01) == (4, 1)
    assert first_stop(values, patience=3, min_delta=0.0) == (None, 4)


def test_min_mode_for_losses():
    assert first_stop([1.0, 0.5, 0.6, 0.4, 0.45, 0.41], mode="min", patience=2) == (6, 4)


def test_state_restored_mid_run_decides_like_the_uninterrupted_run():
    values = [0.5, 0.7, 0.9, 0.8, 0.85, 0.9, 0.95, 0.9, 0.9, 0.9]
    stop, best = first_stop(values)
    assert (stop, best) == (6, 3)
    for cut in range(1, stop):  # interrupted after epoch `cut`
        before = EarlyStopping("max", patience=3)
        for epoch, value in enumerate(values[:cut], start=1):
            before.update(value, epoch)
        after = EarlyStopping("max", patience=3)
        after.load_state_dict(before.state_dict())
        for epoch, value in enumerate(values[cut:], start=cut + 1):
            after.update(value, epoch)
            if after.should_stop:
                break
        assert (epoch, after.best_epoch) == (stop, best), cut


def test_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="mode"):
        EarlyStopping("up", patience=1)
