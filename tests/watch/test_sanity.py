"""The sanity check of a measurement against the training steps' norm."""

import math

import pytest

from keras_gradwatch.watch import _sanity


def test_norms_within_the_factor_are_not_off():
    steps = [1.0, 2.0, 3.0]  # median 2, latest 3
    assert _sanity.mismatch(2.0, steps) == (None, "")
    assert _sanity.mismatch(300.0, steps) == (None, "")  # exactly 100x the latest
    assert _sanity.mismatch(0.02, steps) == (None, "")  # exactly 1/100 of the median
    assert _sanity.mismatch(12.0, steps, factor=4) == (None, "")


def test_norms_apart_by_more_than_the_factor_are_off():
    steps = [1.0, 3.0, 2.0]  # median 2, latest 2
    assert _sanity.mismatch(201.0, steps) == (
        "above",
        "its gradient norm on the probe batch, 201, is 100x above the grad_norm "
        "of the training steps (median 2 over the last 3, latest 2)",
    )
    direction, words = _sanity.mismatch(2.8e-6, [81.0, 83.0])
    assert direction == "below"
    assert "2.8e-06, is 2.93e+07x below the grad_norm of the training steps (median 82" in words
    assert _sanity.mismatch(0.0, steps)[1].endswith("is zero, against the grad_norm of "
                                                    "the training steps (median 2 over "
                                                    "the last 3, latest 2)")


def test_the_median_ignores_one_spike_and_what_is_not_a_number():
    steps = [1.0, 1.0, 1e9, 1.0, None, math.nan, math.inf, -1.0]  # latest 1
    assert _sanity.mismatch(1.0, steps) == (None, "")
    assert _sanity.mismatch(150.0, steps)[0] == "above"
    assert _sanity.mismatch(5.0, [2.0, 8.0, 5.0], factor=1) == (None, "")  # median 5


def test_the_latest_step_follows_a_plateau_exit():
    rising = [0.1] * 15 + [60.0]
    assert _sanity.mismatch(80.0, rising) == (None, "")
    assert _sanity.mismatch(0.002, rising) == (None, "")  # within 100x of the median
    assert "7.5e+03x above" in _sanity.mismatch(4.5e5, rising)[1]
    assert "1e+03x below" in _sanity.mismatch(1e-4, rising)[1]


@pytest.mark.parametrize(
    "measured, steps",
    [(None, [1.0]), (math.nan, [1.0]), (math.inf, [1.0]), (1.0, []),
     (1.0, [None, math.nan]), (5.0, [0.0, 0.0]), (5.0, [1.0, 0.0])],
)
def test_nothing_to_compare(measured, steps):
    assert _sanity.mismatch(measured, steps) is None
    assert _sanity.suspect_reason(measured, steps, previous="above") is None


def test_suspect_only_when_off_the_same_way_twice_in_a_row():
    # Once off is what a blow-up looks like (the measurement sees the
    # weights after the update, the step's norm those before it).
    steps = [1.0, 2.0, 3.0]
    assert _sanity.suspect_reason(500.0, steps) is None
    assert _sanity.suspect_reason(500.0, steps, previous="below") is None
    assert _sanity.suspect_reason(500.0, steps, previous=None) is None
    assert _sanity.suspect_reason(5.0, steps, previous="above") is None
    reason = _sanity.suspect_reason(500.0, steps, previous="above")
    assert reason == (
        "its gradient norm on the probe batch, 500, is 167x above the grad_norm "
        "of the training steps (median 2 over the last 3, latest 3), as at the "
        "measurement before: more than 100x apart twice in a row, it is not the "
        "gradient training follows (a loss other than the training objective, "
        "or a model that trains differently from how it is measured)"
    )
    assert "below" in _sanity.suspect_reason(1e-3, steps, previous="below")


def test_sanity_remembers_each_measurement_and_starts_again_with_a_fit():
    sanity = _sanity.Sanity()
    assert sanity.judge(1e6) is None  # no step yet: nothing to compare
    for norm in (1.0, 1.0, 1.0):
        sanity.add_step(norm)
    assert sanity.judge(1e6) is None  # once off: a blow-up, perhaps
    assert sanity.judge(1e6).startswith("its gradient norm on the probe batch, 1e+06")
    assert sanity.judge(2.0) is None  # back in line
    assert sanity.judge(1e6) is None
    sanity.new_fit()
    assert sanity.norms.values == []
    sanity.add_step(1.0)
    assert sanity.judge(1e6) is None  # the previous fit's verdicts are gone


def test_recent_norms_keep_the_last_finite_values():
    recent = _sanity.RecentNorms(size=3)
    for value in (1.0, None, 2.0, math.nan, 3.0, 4.0, "x"):
        recent.add(value)
    assert recent.values == [2.0, 3.0, 4.0]
    recent.clear()
    assert recent.values == []
    assert _sanity.RecentNorms().values == [] and _sanity.RECENT_STEPS == 16
