import numpy as np
import pytest

from skelpipe.data.pairing import draw_pairs


@pytest.mark.parametrize("fraction", [1.0, 0.8, 0.7, 0.5, 0.0])
def test_fraction_per_class(fraction):
    labels = np.repeat(np.arange(6), [10, 20, 7, 13, 1, 30])
    has_hq = draw_pairs(labels, fraction, seed=3)
    assert has_hq.dtype == bool and has_hq.shape == labels.shape
    for c, n in zip(range(6), [10, 20, 7, 13, 1, 30]):
        assert has_hq[labels == c].sum() == int(np.floor(fraction * n + 0.5))


def test_seeded_and_random():
    labels = np.repeat(np.arange(4), 25)
    a = draw_pairs(labels, 0.7, seed=1)
    assert np.array_equal(a, draw_pairs(labels, 0.7, seed=1))
    assert not np.array_equal(a, draw_pairs(labels, 0.7, seed=2))
    # not simply the first instances of each class
    assert not np.array_equal(a, np.tile(np.arange(25) < 18, 4))


def test_class_draw_independent_of_other_classes():
    labels = np.repeat(np.arange(3), 10)
    a = draw_pairs(labels, 0.5, seed=5)
    b = draw_pairs(labels[:20], 0.5, seed=5)
    assert np.array_equal(a[:20], b)


def test_unavailable_never_paired():
    labels = np.zeros(10, int)
    available = np.arange(10) % 2 == 0
    has_hq = draw_pairs(labels, 0.8, seed=0, available=available)
    assert not has_hq[~available].any()
    assert has_hq.sum() == 4  # round(0.8 * 5)
