import numpy as np
import pytest

from visionloop.data.demo import drop_assignment, load_digits_uint8


def test_drop_assignment_partitions_every_image_by_the_fractions():
    assignment = drop_assignment(1797, (0.8, 0.1, 0.1), seed=0)
    counts = np.bincount(assignment)
    assert counts.sum() == 1797
    assert list(counts) == [1438, 179, 180]


def test_drop_assignment_is_deterministic_and_depends_on_the_seed():
    a = drop_assignment(500, (0.5, 0.5), seed=1)
    assert np.array_equal(a, drop_assignment(500, (0.5, 0.5), seed=1))
    assert not np.array_equal(a, drop_assignment(500, (0.5, 0.5), seed=2))


@pytest.mark.parametrize("fractions", [(), (0.5, 0.0), (1.0, -0.1)])
def test_drop_assignment_rejects_non_positive_fractions(fractions):
    with pytest.raises(ValueError):
        drop_assignment(10, fractions, seed=0)


def test_digits_are_rescaled_to_the_full_uint8_range():
    images, labels = load_digits_uint8()
    assert images.dtype == np.uint8 and images.shape == (1797, 8, 8)
    assert images.min() == 0 and images.max() == 255
    assert sorted(set(labels.tolist())) == list(range(10))
