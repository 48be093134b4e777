"""The sanity check of a measurement against the training steps' norm."""

import math

import pytest

from keras_gradwatch import _sanity


def test_norms_within_the_factor_pass():
    steps = [1.0, 2.0, 3.0]  # median 2
    assert _sanity.suspect_reason(2.0, steps) is None
    assert _sanity.suspect_reason(200.0, steps) is None  # exactly 100x
    assert _sanity.suspect_reason(0.02, steps) is None  # exactly 1/100
    assert _sanity.suspect_reason(7.0, steps, factor=4) is None


def test_norms_apart_by_more_than_the_factor_are_suspect():
    steps = [1.0, 3.0, 2.0]  # median 2, latest 2
    above = _sanity.suspect_reason(201.0, steps)
    assert above.startswith("its gradient norm on the probe batch, 201, is 100x above")
    assert "the grad_norm of the training steps (median 2 over the last 3, latest 2):" in above
    assert "more than 100x apart" in above
    below = _sanity.suspect_reason(2.8e-6, [81.0, 83.0])
    assert "2.8e-06, is 2.93e+07x below the grad_norm of the training steps (median 82" in below
    assert _sanity.suspect_reason(9.0, steps, factor=4).endswith(
        "follows (a loss other than the training objective, or a model that "
        "trains differently from how it is measured)"
    )
    assert "is zero, against the grad_norm" in _sanity.suspect_reason(0.0, steps)


def test_the_median_ignores_one_spike_and_what_is_not_a_number():
    steps = [1.0, 1.0, 1e9, 1.0, None, math.nan, math.inf, -1.0]  # latest 1
    assert _sanity.suspect_reason(1.0, steps) is None
    assert _sanity.suspect_reason(150.0, steps) is not None
    assert _sanity.suspect_reason(5.0, [2.0, 8.0, 5.0], factor=1) is None  # median 5


def test_the_latest_step_follows_a_blow_up_or_a_plateau_exit():
    # The norm leaves its median at the last step: a measurement on those
    # weights agrees with the latest step, and is no suspect.
    rising = [0.1] * 15 + [60.0]
    assert _sanity.suspect_reason(80.0, rising) is None
    assert _sanity.suspect_reason(0.002, rising) is None  # within 100x of the median
    assert "7.5e+03x above" in _sanity.suspect_reason(4.5e5, rising)
    assert "1e+03x below" in _sanity.suspect_reason(1e-4, rising)


@pytest.mark.parametrize(
    "measured, steps",
    [(None, [1.0]), (math.nan, [1.0]), (math.inf, [1.0]), (1.0, []),
     (1.0, [None, math.nan]), (5.0, [0.0, 0.0]), (5.0, [1.0, 0.0])],
)
def test_nothing_to_compare_is_not_suspect(measured, steps):
    assert _sanity.suspect_reason(measured, steps) is None


def test_recent_norms_keep_the_last_finite_values():
    recent = _sanity.RecentNorms(size=3)
    for value in (1.0, None, 2.0, math.nan, 3.0, 4.0, "x"):
        recent.add(value)
    assert recent.values == [2.0, 3.0, 4.0]
    recent.clear()
    assert recent.values == []
    assert _sanity.RecentNorms().values == [] and _sanity.RECENT_STEPS == 16
