"""Tests of `keras_gradwatch.stats` with exact oracles."""

import math

import numpy as np
import pytest

from keras_gradwatch import InvalidInputError
from keras_gradwatch import stats


@pytest.mark.parametrize("rate", [0.5, 0.9, 1.0, 1.1])
def test_decay_rate_of_geometric_profile_is_exact(rate):
    profile = 3.0 * rate ** np.arange(40)
    assert stats.decay_rate(profile) == pytest.approx(rate, rel=1e-12)


def test_decay_rate_fits_through_noise_and_skips_bad_entries():
    rng = np.random.default_rng(0)
    profile = 0.8 ** np.arange(60) * np.exp(rng.normal(0, 0.05, 60))
    profile[[3, 7]] = np.nan
    profile[10] = np.inf
    assert stats.decay_rate(profile) == pytest.approx(0.8, rel=0.01)


def test_decay_rate_edge_cases():
    assert stats.decay_rate(np.zeros(5)) == 0.0
    assert stats.decay_rate([2.0, 0.0, 0.0]) == 0.0  # vanishes at once
    assert stats.decay_rate(np.full(5, 0.3)) == pytest.approx(1.0)
    assert math.isnan(stats.decay_rate([1.0]))
    assert math.isnan(stats.decay_rate([]))
    assert math.isnan(stats.decay_rate([np.nan, np.nan]))


def test_horizon_is_first_lag_below_threshold_of_lag_one():
    profile = 0.5 ** np.arange(20)  # reference 0.5: 0.5**8 < 0.005 <= 0.5**7
    assert stats.horizon(profile) == 8
    assert stats.horizon(profile, threshold=0.1) == 5  # 0.031 < 0.05 < 0.0625
    assert stats.horizon(profile[:5]) == 5  # never below: whole profile
    # A large direct path at lag 0 does not shorten the horizon.
    plateau = np.concatenate([[100.0], np.full(30, 0.5)])
    assert stats.horizon(plateau) == 31


def test_horizon_edge_cases():
    assert stats.horizon(np.zeros(4)) == 0
    assert stats.horizon(np.full(4, 2.0)) == 4
    assert stats.horizon([1.0]) == 1
    assert stats.horizon([0.0]) == 0
    assert stats.horizon([]) == 0
    assert stats.horizon([np.nan, np.nan]) == 0
    assert stats.horizon([0.0, 1.0, 0.5, 0.001]) == 3
    assert stats.horizon([np.nan, 1.0, 0.5, 0.001]) == 3
    # A zero lag 1 falls back on the largest value as reference.
    assert stats.horizon([1.0, 0.0, 0.5, 0.001]) == 1
    with pytest.raises(InvalidInputError, match="threshold=0"):
        stats.horizon([1.0], threshold=0)


def test_truncation_bias_is_mass_beyond_window():
    profile = 0.5 ** np.arange(10)
    expected = profile[3:].sum() / profile.sum()
    assert stats.truncation_bias(profile, 3) == pytest.approx(expected)
    assert stats.truncation_bias(profile, 10) == 0.0
    assert stats.truncation_bias(profile, 50) == 0.0
    assert stats.truncation_bias(np.ones(4), 1) == pytest.approx(0.75)


def test_truncation_bias_edge_cases():
    assert stats.truncation_bias(np.zeros(5), 2) == 0.0
    assert stats.truncation_bias([], 2) == 0.0
    assert stats.truncation_bias([np.nan, 1.0, 1.0], 2) == pytest.approx(0.5)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InvalidInputError, match="window="):
            stats.truncation_bias([1.0], bad)


def test_suggested_window_is_smallest_within_tolerance():
    profile = 0.5 ** np.arange(30)
    window = stats.suggested_window(profile, tolerance=0.05)
    assert stats.truncation_bias(profile, window) <= 0.05
    assert stats.truncation_bias(profile, window - 1) > 0.05
    assert window == 5  # bias(5) = 0.031 <= 0.05 < bias(4) = 0.0625


def test_suggested_window_edge_cases():
    assert stats.suggested_window(np.zeros(4)) == 1
    assert stats.suggested_window(np.ones(4), tolerance=0.0) == 4
    assert stats.suggested_window(1.1 ** np.arange(10)) == 10  # still growing
    assert stats.suggested_window([5.0]) == 1
    with pytest.raises(InvalidInputError, match="tolerance=1"):
        stats.suggested_window([1.0], tolerance=1)


def test_profile_must_be_one_dimensional():
    with pytest.raises(InvalidInputError, match="1-D"):
        stats.decay_rate(np.ones((2, 3)))


def test_tail_decay_rate_sees_growth_after_a_dip():
    profile = np.concatenate([0.5 ** np.arange(10), 0.5**9 * 1.3 ** np.arange(1, 11)])
    assert stats.decay_rate(profile) < 1.0
    assert stats.tail_decay_rate(profile, 0.5) == pytest.approx(1.3, rel=1e-9)
    assert stats.tail_decay_rate(profile) == pytest.approx(1.3, rel=1e-9)
    assert stats.tail_decay_rate(0.9 ** np.arange(20)) == pytest.approx(0.9)
    assert math.isnan(stats.tail_decay_rate([1.0, 2.0, 3.0]))  # one lag left
    with pytest.raises(InvalidInputError, match="fraction=0"):
        stats.tail_decay_rate([1.0], fraction=0)
