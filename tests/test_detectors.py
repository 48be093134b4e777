"""Tests of `keras_gradwatch._detectors`: alerts from numbers alone."""

import numpy as np
import pytest

from keras_gradwatch import stats
from keras_gradwatch._detectors import GrowthInTime
from keras_gradwatch._detectors import Jump
from keras_gradwatch._detectors import LayerFacts
from keras_gradwatch._detectors import VanishingTail
from keras_gradwatch._detectors import jump_message
from keras_gradwatch.measurement import LayerProfile

LSTM = LayerFacts("LSTM", unit_forget_bias=True)
RNN = LayerFacts("SimpleRNN")


def record(profile, name="rnn", site="state", window=None):
    return LayerProfile.from_profile(name, site, profile, window, 0.01, 0.05)


# Jumps ---------------------------------------------------------------------------


def test_jump_after_warmup_against_the_recent_highs():
    jump = Jump(factor=10.0, warmup=5)
    for value in (1.0, 1.2, 0.9, 1.1, 1.0):
        assert jump.check(value) is None
    assert jump.check(10.0) is None  # 8.8x the 90th percentile (1.14)
    assert jump.check(30.0) is None  # the history now holds the 10.0
    ratio, base, warm = jump.check(200.0)
    assert warm and base == pytest.approx(18.0) and ratio == pytest.approx(200 / 18)


def test_heavy_tailed_healthy_norms_are_not_jumps():
    # A learning LSTM: norms swing far above their median, not their highs.
    rng = np.random.default_rng(0)
    jump = Jump(factor=10.0, warmup=5)
    found = [jump.check(v) for v in 0.2 * np.exp(rng.normal(0, 1.0, size=500))]
    assert not any(found)
    median = Jump(factor=10.0, warmup=5, reference="median")
    rng = np.random.default_rng(0)
    assert any(median.check(v) for v in 0.2 * np.exp(rng.normal(0, 1.0, size=500)))


def test_jump_in_the_warmup_needs_orders_of_magnitude():
    jump = Jump(factor=10.0, warmup=5)
    assert jump.check(2.0) is None  # nothing to compare with
    assert jump.check(50.0) is None  # 25x at step 2: early training moves fast
    ratio, base, warm = jump.check(1e13)
    assert not warm and base == 50.0 and ratio == pytest.approx(2e11)
    message = jump_message("loss", 1e13, 3, (ratio, base, warm), 2)
    assert "orders of magnitude" in message and "step 3" in message


def test_jump_of_the_loss_uses_the_highest_recent_value():
    jump = Jump(factor=10.0, warmup=3, reference="max")
    for value in (5.0, 0.1, 0.1, 0.1):
        jump.check(value)
    assert jump.check(20.0) is None  # 4x the highest (5.0), not 200x the median
    assert jump.check(250.0)[1] == 20.0


def test_non_finite_values_are_not_jumps_and_not_history():
    jump = Jump(factor=10.0, warmup=1)
    assert jump.check(float("nan")) is None and jump.check(None) is None
    assert len(jump) == 0


# Growth in time --------------------------------------------------------------------


def test_few_steps_with_one_jump_next_to_the_loss_are_not_exploding():
    # The decoder LSTM of keras-io's addition_rnn.py: a healthy run.
    profile = [0.0574, 0.0728, 0.0748, 0.0759]
    assert stats.decay_rate(profile) > 1.05  # what used to raise the alert
    assert GrowthInTime(1.05).check("lstm_1", profile, 100, LSTM, "Clip.") is None
    # Ten steps, one 5x jump at lag 1 and flat after it: still no evidence.
    flat = [1.0, 5.0] + [5.1] * 8
    assert GrowthInTime(1.05).check("lstm", flat, 100, LSTM, "Clip.") is None


def test_sustained_growth_is_exploding_and_says_what_was_measured():
    profile = 0.5 * 1.2 ** np.arange(30)
    found = GrowthInTime(1.05).check("relu_rnn", profile, 7, RNN, "CLIP.", site="state")
    assert found.kind == "exploding" and found.layer == "relu_rnn"
    assert found.value == pytest.approx(1.2) and found.threshold == 1.05
    for text in ("measured at step 7", "∂L/∂h_t", "29 steps", "1.200x", "CLIP.",
                 "gated layer (LSTM/GRU)"):
        assert text in found.message, text


def test_growth_after_a_dip_is_caught_by_the_far_quarter():
    profile = np.concatenate([0.8 ** np.arange(30), 0.8**29 * 1.5 ** np.arange(1, 11)])
    assert stats.decay_rate(profile[1:]) < 1.05
    found = GrowthInTime(1.05).check("rnn", profile, 7, LSTM, "Clip.")
    assert found is not None and "1.500x over the far quarter" in found.message
    # Advice fits a gated layer: no "use an LSTM/GRU" for an LSTM.
    assert "LSTM/GRU" not in found.message


def test_mild_or_noisy_growth_is_not_exploding():
    rng = np.random.default_rng(0)
    noisy = 40 * np.exp(rng.normal(0, 0.3, size=40))  # flat, with noise
    assert GrowthInTime(1.05).check("rnn", noisy, 0, RNN, "Clip.") is None
    mild = 1.02 ** np.arange(200)  # 52x over 200 steps, but 1.02 per step
    assert GrowthInTime(1.05).check("rnn", mild, 0, LSTM, "Clip.") is None


# Vanishing ---------------------------------------------------------------------------


def test_vanishing_needs_patience_and_ignores_step_zero():
    detector = VanishingTail(fraction=1e-3, patience=3)
    vanishing = record(0.5 ** np.arange(40))
    assert detector.check("rnn", vanishing, 0, 39, None, RNN) is None
    assert detector.check("rnn", vanishing, 1, 39, 1.0, RNN) is None
    assert detector.check("rnn", vanishing, 2, 39, 1.0, RNN) is None
    found = detector.check("rnn", vanishing, 4, 39, 1.0, RNN)
    assert found.kind == "vanishing" and found.value == pytest.approx(0.5**39)
    assert "reaches 39 steps back" in found.message
    assert "3 measurements in a row" in found.message
    assert "cannot learn" not in found.message
    assert "use an LSTM or GRU" in found.message


def test_vanishing_is_not_reported_while_the_loss_falls():
    # A short memory is only worth an alert once the model stops learning.
    detector = VanishingTail(fraction=1e-3, patience=3)
    vanishing = record(0.5 ** np.arange(40))
    for step, loss in ((1, 2.0), (2, 1.5), (3, 1.2), (4, 1.0)):
        assert detector.check("rnn", vanishing, step, 39, loss, RNN) is None
    # Three measurements in a row with the loss within 1 %: reported.
    assert detector.check("rnn", vanishing, 5, 39, 0.995, RNN) is None
    found = detector.check("rnn", vanishing, 6, 39, 0.992, RNN)
    assert found is not None and found.kind == "vanishing"


def test_vanishing_is_not_repeated_while_the_loss_falls():
    detector = VanishingTail(fraction=1e-3, patience=1)
    vanishing = record(0.5 ** np.arange(40), name="lstm")
    first = detector.check("lstm", vanishing, 1, 39, 2.0, LSTM)
    assert first is not None
    # Keras LSTMs have unit_forget_bias=True: the advice knows it.
    assert "already starts with a forget-gate bias of 1" in first.message
    for step, loss in ((2, 1.8), (3, 1.5), (4, 1.2)):
        assert detector.check("lstm", vanishing, step, 39, loss, LSTM) is None
    stalled = detector.check("lstm", vanishing, 5, 39, 2.5, LSTM)
    assert stalled is not None and "has not fallen" in stalled.message
    # After it recovers, a new episode is reported again.
    assert detector.check("lstm", record(np.ones(40), name="lstm"), 6, 39, 1.0, LSTM) is None
    assert detector.check("lstm", vanishing, 7, 39, 0.5, LSTM) is not None


def test_vanishing_within_backprop_states_the_truncation_bias():
    detector = VanishingTail(fraction=1e-3, patience=1)
    profile = record(0.5 ** np.arange(40), window=20)
    found = detector.check("rnn", profile, 3, 19, None, LayerFacts("GRU"), backprop=20)
    assert "reaches 19 steps back" in found.message
    assert "Truncating at backprop=20 cuts off" in found.message
    assert "skip connections or attention" in found.message


def test_lstm_without_forget_bias_is_told_to_set_it():
    detector = VanishingTail(fraction=1e-3, patience=1)
    found = detector.check(
        "lstm", record(0.5 ** np.arange(40)), 3, 39, None, LayerFacts("LSTM", False)
    )
    assert "unit_forget_bias=False" in found.message


def test_one_lag_standing_out_is_not_growth():
    # At a layer's input, the step whose value the answer needs stands out
    # (the lag-adding task's first marker, 50 steps back): not a recurrence
    # that amplifies.
    profile = 0.91 ** np.arange(51)
    profile[50] = 14 * profile[1:].min()
    assert stats.growth(profile) >= 10
    assert GrowthInTime(1.05).check("lstm", profile, 448, LSTM, "Clip.", site="input") is None
    # The same rise held over the far quarter is growth.
    held = profile.copy()
    held[38:] = held[37] * 1.3 ** np.arange(1, 14)
    assert GrowthInTime(1.05).check("lstm", held, 448, LSTM, "Clip.", site="input") is not None
