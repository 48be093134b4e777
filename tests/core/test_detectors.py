"""The detectors (`_detectors`) on numbers alone: healthy patterns give no
finding, failures give one that states its evidence."""

import math
import pathlib

import numpy as np
import pytest

from keras_gradwatch import stats
from keras_gradwatch.core import _detectors
from keras_gradwatch.core._detectors import kinds
from keras_gradwatch.core._detectors.base import Evidence
from keras_gradwatch.core._detectors.base import LayerFacts
from keras_gradwatch.core._detectors.growth import GrowthInTime
from keras_gradwatch.core._detectors.nonfinite import NonFiniteStep
from keras_gradwatch.core._detectors.spikes import Spikes
from keras_gradwatch.core._detectors.trend import LossTrend
from keras_gradwatch.core._detectors.truncation import TruncationBias
from keras_gradwatch.core._detectors.update_ratio import UpdateRatio
from keras_gradwatch.core._detectors.vanishing import MIN_UPDATES
from keras_gradwatch.core._detectors.vanishing import VanishingTail
from keras_gradwatch.measurement import LayerProfile

LSTM = LayerFacts("LSTM", unit_forget_bias=True)
RNN = LayerFacts("SimpleRNN")


def record(profile, site="state", window=None):
    return LayerProfile.from_profile("rnn", site, profile, window, 0.01, 0.05)


def steps(detector, losses, norms=None, first=1, rates=None):
    """Feeds a detector step evidence; returns {step: finding}."""
    norms = [None] * len(losses) if norms is None else norms
    rates = [None] * len(losses) if rates is None else rates
    found = {}
    for step, (loss, norm, lr) in enumerate(zip(losses, norms, rates), start=first):
        finding = detector.check(Evidence("step", step, 0, loss=loss, grad_norm=norm, lr=lr))
        if finding is not None:
            found[step] = finding
    return found


def layer(profile, step=500, epoch=2, updates=1000, trend=None, **kwargs):
    return Evidence("layer", step, epoch, updates=updates, layer="rnn", profile=profile,
                    trend=trend, **kwargs)


# The registry --------------------------------------------------------------------


def test_every_registered_detector_is_built_and_declares_its_kind():
    built = _detectors.build(_detectors.Settings())
    assert [d.kind for d in built] == [
        spec.name for spec in kinds.KINDS for _ in spec.detectors
    ]
    for detector in built:
        assert detector.moment in ("step", "measurement", "layer")
        for need in detector.needs:
            assert need in Evidence.__dataclass_fields__
    assert len({spec.name for spec in kinds.KINDS}) == len(kinds.KINDS)
    assert len({spec.color for spec in kinds.KINDS}) == len(kinds.KINDS)


def test_a_detector_registered_under_another_kind_is_refused():
    wrong = kinds.KindSpec("vanishing", "warn", "", "#000000", "o",
                           detectors=("spikes.Spikes",))
    with pytest.raises(TypeError, match="declares kind 'exploding'"):
        _detectors.build(_detectors.Settings(), kinds=(wrong,))


# Spikes, judged with the loss ----------------------------------------------------------


def test_plateau_exit_is_learning_not_exploding():
    # An LSTM classifier leaving the 0.693 plateau: its norm rises from
    # 0.1-0.4 to 1-6 and stays there while the loss falls to 0.4.
    rng = np.random.default_rng(0)
    norms = np.concatenate([rng.uniform(0.1, 0.4, 80), rng.uniform(1.0, 6.0, 120)])
    losses = np.concatenate([
        0.693 + rng.normal(0, 0.004, 80),
        np.linspace(0.69, 0.4, 120) + rng.normal(0, 0.01, 120),
    ])
    # The norm alone leaps far above its recent highs (what used to alert):
    leaps = [t for t in range(5, 200)
             if norms[t] > 10 * np.quantile(norms[max(0, t - 100):t], 0.9)]
    assert leaps
    assert steps(Spikes(), list(losses), list(norms)) == {}


def test_norm_spike_followed_by_a_rising_loss_is_exploding():
    losses = [1.0] * 30 + [1.0, 3.0]
    norms = [0.5] * 30 + [50.0, 0.6]
    found = steps(Spikes(), losses, norms)
    assert list(found) == [32]  # the step where the loss rose, not the spike's
    finding = found[32]
    assert (finding.kind, finding.signal, finding.value, finding.threshold) == (
        "exploding", "grad_norm", 50.0, 5.0
    )
    assert finding.evidence["spike_step"] == 31 and finding.evidence["loss"] == 3.0
    assert finding.evidence["loss_top"] == 1.0 and finding.evidence["loss_level"] == 1.0
    for text in ("jumped to 50 at step 31", "100x the 90th percentile of the last 30 steps",
                 "rose to 3 at step 32", "above the highest (1) and 2x the median (1) of the 20 steps before"):
        assert text in finding.message, text


def test_norm_spike_followed_by_a_nonfinite_loss_is_exploding():
    found = steps(Spikes(), [1.0] * 31 + [math.nan], [0.5] * 30 + [50.0, math.nan])
    assert list(found) == [32] and "turned nan at step 32" in found[32].message


def test_a_spike_the_loss_does_not_follow_is_no_alert():
    # A hard batch of a well-fitted model: its own loss and norm leap at the
    # same step (computed before its update); the next steps are normal.
    losses = [0.001, 0.0012] * 15 + [0.01, 0.0011, 0.0011, 0.0011, 0.0011]
    norms = [0.004] * 30 + [1.0, 0.004, 0.004, 0.004, 0.004]
    assert steps(Spikes(), losses, norms) == {}
    # A rise after the spike's window (3 steps) is not its confirmation.
    losses = [1.0] * 30 + [1.0, 1.0, 1.0, 1.0, 2.5]
    assert steps(Spikes(), losses, [0.5] * 30 + [50.0] + [0.5] * 4) == {}


def test_a_loss_jump_is_exploding_when_what_follows_confirms_it():
    losses = [1.0] * 20 + [0.9, 12.0]
    # The next 3 losses stay above the usual ones: the model changed.
    found = steps(Spikes(), losses + [5.0, 1.5, 6.0])
    assert list(found) == [25] and found[25].signal == "loss"
    assert found[25].threshold == 10.0 and found[25].value == 12.0
    assert found[25].evidence["jump_step"] == 22 and found[25].evidence["loss"] == 6.0
    for text in ("jumped to 12 at step 22, 12x the highest of the last 21 steps (1)",
                 "stayed above the 90th percentile of the steps before it (1) at each of the 3",
                 "the model did not come back"):
        assert text in found[25].message, text
    # ... or it jumps again, its gradient norm spikes, or a value turns non-finite.
    found = steps(Spikes(), losses + [130.0])
    assert list(found) == [23] and "jumped again, to 130 at step 23" in found[23].message
    found = steps(Spikes(), losses + [2.0], [0.5] * 22 + [50.0])
    assert list(found) == [23] and "gradient norm then jumped to 50 at step 23" in found[23].message
    found = steps(Spikes(), losses + [2.0, math.nan])
    assert list(found) == [24] and "the loss turned nan at step 24" in found[24].message
    # A hard batch (a rare example, an outlier target): a loss after it is
    # usual again. A regression with one outlier target gets that once an epoch.
    assert steps(Spikes(), losses + [5.0, 1.0, 6.0, 5.0], [0.5] * 26) == {}


def test_a_jump_is_judged_over_the_logged_steps_with_steps_per_execution():
    # steps_per_execution=4: Keras logs steps 4, 8, 12...; a blow-up that
    # stays high is confirmed after 3 logs (not dropped for the step count).
    detector = Spikes()
    losses = [1.0] * 20 + [12.0, 6.0, 7.0, 8.0]
    found = {}
    for i, loss in enumerate(losses):
        step = 4 * (i + 1)
        finding = detector.check(Evidence("step", step, 0, loss=loss))
        if finding is not None:
            found[step] = finding
    assert list(found) == [96] and found[96].evidence["jump_step"] == 84


def test_a_hard_batch_leaping_in_loss_and_norm_at_once_waits_for_the_jump_rule():
    # Heavy-tailed losses: one later loss above the 20 before is no
    # confirmation of the spike of the same step; the next is usual again.
    losses = [0.01, 0.02, 0.005, 0.3] * 8 + [5.0, 0.4, 0.01, 0.02, 0.01]
    norms = [0.1] * 32 + [20.0, 0.2, 0.1, 0.1, 0.1]
    assert steps(Spikes(), losses, norms) == {}


def test_a_loss_jump_right_after_the_learning_rate_rose_is_exploding_at_once():
    losses = [0.35] * 26 + [0.39, 24.2]
    rates = [1e-3] * 26 + [1.0, 1.0]  # the rate of step 27's update rose 1000x
    found = steps(Spikes(), losses, rates=rates)
    assert list(found) == [28] and found[28].evidence["cause"] == "learning_rate"
    assert "right after the learning rate rose 1e+03x (from 0.001 to 1)" in found[28].message
    # The same jump at the same rate: a hard batch until the next steps say.
    assert steps(Spikes(), losses, rates=[1e-3] * 28) == {}


def test_in_the_warmup_only_orders_of_magnitude_count():
    found = steps(Spikes(factor=10.0, warmup=5), [2.0, 50.0, 1e13, 1e14])
    assert list(found) == [4]  # 25x at step 2: early training moves fast
    assert "2e+11x the largest of the first 2 steps" in found[4].message
    assert "orders of magnitude" in found[4].message


def test_a_creeping_blow_up_is_alerted_when_its_loss_first_reaches_10x():
    # The loss doubles each step, the norm grows by 1.41x: no single step is
    # a jump and no norm leaps 10x.
    losses = [1.0] * 30 + [2.0**k for k in range(1, 8)]
    norms = [0.5] * 30 + [0.5 * 1.41**k for k in range(1, 8)]
    found = steps(Spikes(), losses, norms)
    first_10x = next(30 + k for k in range(1, 8) if 2.0**k >= 10)
    assert min(found) == first_10x == 34
    assert "after rising at each of the 3 steps before it (2, 4, 8" in found[34].message
    # A rise from noise is not a climb: near-zero, heavy-tailed losses rising
    # 0 -> 1e-4 -> 2.5e-3 before one at 0.17, then back (a hard batch of a
    # well-fitted classifier, as in a 15-epoch MLP under SGD).
    calm = [0.001, 0.0012, 0.0008, 0.0005, 0.035] * 6 + [0.0, 1e-4, 2.5e-3, 0.17, 0.0, 0.0137,
                                                         1e-4]
    assert steps(Spikes(), calm) == {}
    # A step at 10x its level out of the blue, held at the next 3 steps too.
    # (16: above 10x the median 1.5, below 10x the highest 2.)
    found = steps(Spikes(), [1.0, 2.0] * 15 + [16.0, 17.0, 15.0, 18.0])
    assert list(found) == [34] and "(up to 18 at step 34)" in found[34].message
    assert found[34].evidence["jump_step"] == 31 and found[34].threshold == 15.0
    assert steps(Spikes(), [1.0, 2.0] * 15 + [16.0, 17.0, 1.0, 18.0]) == {}


SERIES = np.load(pathlib.Path(__file__).parent.parent / "data" / "step_series.npz")


def run_series(name):
    """Feeds a stored run's steps (loss, grad_norm, lr) to a new `Spikes`."""
    losses, norms, rates = (list(map(lambda v: None if math.isnan(v) else float(v), column))
                            for column in SERIES[name].T)
    return steps(Spikes(), losses, norms, rates=rates)


@pytest.mark.parametrize("name", [n for n in SERIES.files if n.startswith("healthy__")])
def test_no_exploding_verdict_on_a_healthy_real_run(name):
    # The corpus's healthy scripts and MLPs with heavy-tailed batch losses
    # (tools/heavy_tailed_runs.py): hard batches 10-250x their median.
    assert run_series(name) == {}


def test_real_blow_ups_are_found_where_they_show():
    # The ReLU RNN: loss 17x its median at step 24, 3.6 at 25, 620 at 26.
    found = run_series("blowup__relu_rnn")
    assert min(found) == 26 and found[26].evidence["jump_step"] == 24
    # The learning rate raised 1000x at step 27: the jump of step 28 at once.
    found = run_series("blowup__lr_fault")
    assert min(found) == 28 and found[28].evidence["cause"] == "learning_rate"
    # SGD meets the outlier row at step 83 and the ReLU network dies: its
    # loss stays above the usual ones.
    found = run_series("blowup__outlier_regression_sgd")
    assert min(found) == 86 and found[86].evidence["jump_step"] == 83


def test_user_ceiling_and_the_probe_norm():
    found = steps(Spikes(max_grad_norm=1e-6), [1.0, 1.0], [0.5, 0.5])
    assert list(found) == [1, 2] and "above max_grad_norm=1e-06" in found[1].message
    detector = Spikes()
    for step in range(1, 8):  # measurements of the probe batch, losses of steps
        detector.check(Evidence("step", step, 0, grad_norm=1.0, norm_source="probe"))
        detector.check(Evidence("step", step, 0, loss=1.0))
    detector.check(Evidence("step", 8, 0, grad_norm=30.0, norm_source="probe"))
    found = detector.check(Evidence("step", 9, 0, loss=5.0))
    assert "gradient norm on the probe batch jumped to 30" in found.message
    assert "last 7 measurements" in found.message


def test_nonfinite_steps():
    detector = NonFiniteStep()
    found = detector.check(Evidence("step", 3, 1, loss=math.nan))
    assert (found.kind, found.signal, found.diagnose) == ("nonfinite", "loss", True)
    assert found.message == "The loss is not finite at step 3 (epoch 1)."
    skipped = detector.check(Evidence("step", 4, 1, loss=1.0, new_skips=2))
    assert skipped.signal == "skipped_updates" and skipped.value == 2.0
    assert detector.check(Evidence("step", 4, 1, loss=1.0, new_skips=2, loss_scaled=True)) is None


def test_a_nan_that_comes_at_once_points_at_the_data_first():
    steady = NonFiniteStep(factor=10.0)
    for step, norm in enumerate([7.3, 3.8, 5.3, 4.0, 5.0], 1):
        assert steady.check(Evidence("step", step, 0, updates=step, loss=1.0, grad_norm=norm)) is None
    found = steady.check(Evidence("step", 6, 0, updates=6, loss=1.0, grad_norm=math.nan))
    assert (found.signal, found.advice) == ("grad_norm", "data_first")
    assert ("Nothing grew before it: the gradient norm was 5 the step before (median 5); "
            "the loss was 1 the step before (median 1).") in found.message
    # A norm that grew past factor x its median before the NaN: a blow-up.
    grown = NonFiniteStep(factor=10.0)
    for step, norm in enumerate([1.0, 1.1, 0.9, 1.0, 60.0], 1):
        grown.check(Evidence("step", step, 0, updates=step, loss=1.0, grad_norm=norm))
    found = grown.check(Evidence("step", 6, 0, updates=6, loss=1.0, grad_norm=math.nan))
    assert found.advice == "nonfinite" and "Nothing grew" not in found.message
    # At the first update the weights are the initial ones.
    first = NonFiniteStep().check(Evidence("step", 1, 0, updates=1, loss=math.nan))
    assert first.advice == "data_first" and "from the initial weights" in first.message


def test_a_logged_loss_other_than_loss_is_checked():
    # A GAN's custom train_step logs d_loss and g_loss, no loss.
    detector = NonFiniteStep()
    assert detector.check(Evidence("step", 1, 0, logged_losses={"d_loss": 0.6, "g_loss": 0.7})) is None
    found = detector.check(Evidence("step", 2, 0, logged_losses={"d_loss": math.nan, "g_loss": 0.7}))
    assert (found.signal, found.value != found.value) == ("logged_loss", True)
    assert found.message.startswith("The logged 'd_loss' is not finite at step 2 (epoch 0).")


# Growth in time ------------------------------------------------------------------------


def test_few_steps_with_one_jump_next_to_the_loss_are_not_exploding():
    # The decoder LSTM of keras-io's addition_rnn.py: a healthy run.
    profile = [0.0574, 0.0728, 0.0748, 0.0759]
    assert stats.decay_rate(profile) > 1.05
    assert GrowthInTime().check(layer(record(profile), facts=LSTM)) is None
    flat = [1.0, 5.0] + [5.1] * 8
    assert GrowthInTime().check(layer(record(flat), facts=LSTM)) is None


def test_sustained_growth_of_the_state_gradient_is_exploding():
    found = GrowthInTime().check(layer(record(0.5 * 1.2 ** np.arange(30)), step=7, facts=RNN))
    assert found.kind == "exploding" and found.layer == "rnn"
    assert found.value == pytest.approx(1.2) and found.threshold == 1.05
    assert found.evidence["lags"] == (1, 29) and found.advice == "clip"
    for text in ("measured at step 7", "∂L/∂h_t", "29 steps", "1.200x"):
        assert text in found.message, text
    assert "gated layer (LSTM/GRU)" in found.remedy


def test_growth_after_a_dip_is_caught_by_the_far_quarter():
    profile = np.concatenate([0.8 ** np.arange(30), 0.8**29 * 1.5 ** np.arange(1, 11)])
    assert stats.decay_rate(profile[1:]) < 1.05
    found = GrowthInTime().check(layer(record(profile), facts=LSTM))
    assert found is not None and "1.500x over the far quarter" in found.message
    assert "LSTM/GRU" not in found.remedy


def test_mild_or_noisy_growth_is_not_exploding():
    rng = np.random.default_rng(0)
    noisy = 40 * np.exp(rng.normal(0, 0.3, size=40))
    assert GrowthInTime().check(layer(record(noisy))) is None
    assert GrowthInTime().check(layer(record(1.02 ** np.arange(200)))) is None


def _padded_text_profile():
    """An encoder's input gradient on sentences padded with spaces at the
    end: below 5e-5 over the padding (lags 0-8), rising where the sentence
    starts, about flat over it (as measured on the false alarm)."""
    padding = 4e-5 * 0.97 ** np.arange(9)
    sentence = padding[-1] * 1.77 ** np.arange(1, 6)
    return np.concatenate([padding, sentence, sentence[-1] * (1 + 0.001 * np.arange(13))])


def test_padded_text_rise_is_not_exploding():
    profile = _padded_text_profile()
    assert profile.size == 27 and profile[:9].max() < 5e-5
    assert stats.growth(profile) == pytest.approx(17.6, rel=0.02)  # "rises 17.6x"
    # Judged over the whole profile, the rise from padding to the sentence
    # passes the growth tests of a state gradient:
    assert GrowthInTime().check(layer(record(profile, site="state"))) is not None
    # At a stock layer's input the same rise is where the sentence starts:
    # no verdict, stalled loss or not.
    for trend in (_stalled(), None):
        assert GrowthInTime().check(layer(record(profile, site="input"), trend=trend)) is None


def test_input_and_probe_sites_give_no_growth_verdict():
    # A ReLU RNN with large recurrent weights rises at every lag; so does an
    # LSTM classifier's input gradient when its cue sits in the first steps
    # (the next test). At the input both look alike: only the state gradient
    # speaks for the recurrence.
    profile = 1e-3 * 1.25 ** np.arange(27)
    for site in ("input", "probe"):
        assert GrowthInTime().check(layer(record(profile, site=site), trend=_stalled(),
                                          facts=RNN)) is None
    found = GrowthInTime().check(layer(record(profile, site="state"), facts=RNN))
    assert found is not None and found.evidence["lags"] == (1, 26)
    assert "over the 26 steps of the profile it rises" in found.message


def test_an_input_gradient_rising_while_the_loss_falls_is_learning():
    # A stock LSTM classifier leaving its 0.693 plateau (its information in
    # the first 10 of 30 steps), measured at step 72: the input gradient
    # rises 90x going back, smoothly, while the loss falls to 0.02.
    profile = np.array([
        0.03453, 0.02764, 0.02623, 0.02609, 0.02724, 0.02944, 0.03358, 0.04054, 0.05068,
        0.06518, 0.08414, 0.10963, 0.14208, 0.1836, 0.2337, 0.29623, 0.37617, 0.46653,
        0.57062, 0.69105, 0.82982, 0.9654, 1.11477, 1.29408, 1.46039, 1.63927, 1.80633,
        2.00153, 2.16366, 2.35414])
    trend = LossTrend()
    trend.epoch_end(0, 0.691, None)
    falling = trend.epoch_end(1, 0.577, None)
    assert GrowthInTime().check(layer(record(profile, site="input"), trend=falling)) is None
    assert GrowthInTime().check(layer(record(profile, site="input"), trend=None)) is None


def test_the_detectors_docstring_examples_run():
    import doctest

    from keras_gradwatch.core._detectors import base
    from keras_gradwatch.core._detectors import growth
    from keras_gradwatch.core._detectors import kinds
    from keras_gradwatch.core._detectors import trend

    for module in (base, growth, kinds, trend):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__


# The loss trend, vanishing and truncation -----------------------------------------------


def test_loss_trend_uses_validation_loss_else_epoch_means():
    trend = LossTrend()
    trend.epoch_end(0, 0.385, 0.560)
    # The forecasting LSTM on unshuffled data: learning.
    falling = trend.epoch_end(1, 0.243, 0.278)
    assert falling.series == "val_loss" and not falling.stalled
    stalled = trend.epoch_end(2, 0.169, 0.2775)  # training falls, validation does not
    assert stalled.stalled and stalled.best == 0.278 and stalled.best_epoch == 1
    assert stalled.describe() == (
        "the validation loss has not fallen by 1% below its best earlier value "
        "(0.278 at epoch 1): 0.2775 at epoch 2"
    )
    trend = LossTrend()
    for epoch, loss in enumerate([0.385, 0.243, 0.169]):
        latest = trend.epoch_end(epoch, loss, None)
    assert latest.series == "loss" and not latest.stalled


def _stalled(epoch=2):
    trend = LossTrend()
    for e, value in enumerate([0.70, 0.66, 0.659][: epoch + 1]):
        trend.epoch_end(e, value, None)
    return trend.latest


def test_vanishing_needs_patience_a_stalled_loss_and_a_trained_network():
    detector = VanishingTail(fraction=1e-3, patience=3)
    vanishing = record(0.5 ** np.arange(40))
    stalled = _stalled()
    # First epoch, or fewer than MIN_UPDATES updates: never counted, whatever
    # scheduled the measurement.
    for step in (3, 5, 6):
        assert detector.check(layer(vanishing, step=step, epoch=0, updates=step * 25,
                                    trend=stalled)) is None
    for step in range(10, 40):
        assert detector.check(layer(vanishing, step=step, epoch=1, updates=MIN_UPDATES - 1,
                                    trend=stalled)) is None
    assert detector.check(layer(vanishing, step=50, trend=stalled)) is None
    assert detector.check(layer(vanishing, step=51, trend=stalled)) is None
    found = detector.check(layer(vanishing, step=52, trend=stalled, facts=RNN))
    assert found.kind == "vanishing" and found.value == pytest.approx(0.5**39)
    assert found.evidence["streak"] == 3 and found.evidence["far"] == 39
    for text in ("reaches 39 steps back", "3 measurements in a row",
                 "epoch-mean training loss has not fallen by 1%"):
        assert text in found.message, text
    assert "use an LSTM or GRU" in found.remedy
    # Once per epoch verdict.
    assert detector.check(layer(vanishing, step=53, trend=stalled)) is None


def test_vanishing_is_not_reported_while_the_loss_falls():
    detector = VanishingTail(fraction=1e-3, patience=1)
    trend = LossTrend()
    trend.epoch_end(0, 0.385, 0.560)
    falling = trend.epoch_end(1, 0.243, 0.278)
    vanishing = record(0.5 ** np.arange(40))
    assert detector.check(layer(vanishing, trend=falling)) is None
    assert detector.check(layer(vanishing, trend=None)) is None  # one epoch: no verdict
    assert detector.check(layer(vanishing, trend=_stalled(), facts=LSTM)) is not None


def test_an_input_profile_rising_where_the_information_sits_is_not_vanishing():
    # An LSTM reading reviews padded at the end: the input gradient fades
    # over the padding, then rises again at the review's first words.
    padding = 0.5 ** np.arange(45)
    review = padding[-1] * 1.25 ** np.arange(1, 16)
    shape = np.concatenate([padding, review])
    assert shape[-1] / shape[0] < 1e-3 and shape[-1] / shape[1:-1].min() > 3
    for site in ("input", "probe"):
        detector = VanishingTail(fraction=1e-3, patience=1)
        assert detector.check(layer(record(shape, site=site), trend=_stalled())) is None
    # The same far end with no rise before it: a fading input gradient.
    fading = record(np.concatenate([padding, np.full(15, padding[-1])]), site="input")
    assert VanishingTail(patience=1).check(layer(fading, trend=_stalled())) is not None
    # The state gradient is the recurrence itself: judged whatever its shape.
    state = VanishingTail(fraction=1e-3, patience=1)
    assert state.check(layer(record(shape, site="state"), trend=_stalled())) is not None


def test_vanishing_within_backprop_states_the_truncation_bias():
    detector = VanishingTail(fraction=1e-3, patience=1)
    profile = record(0.5 ** np.arange(40), window=20)
    found = detector.check(layer(profile, backprop=20, trend=_stalled(),
                                 facts=LayerFacts("GRU")))
    assert "reaches 19 steps back" in found.message
    assert "Truncating at backprop=20 cuts off" in found.message
    assert "skip connections or attention" in found.remedy


def test_truncation_needs_most_of_the_gradient_cut_and_a_stalled_loss():
    # A GRU whose gradient reaches far: at backprop=10 the window cuts off
    # 90 % of it.
    profile = 0.99 ** np.arange(300)
    cut = record(profile, window=10)
    assert cut.truncation_bias == pytest.approx(0.90, abs=0.005)
    detector = TruncationBias(tolerance=0.05)
    trend = LossTrend()
    for epoch, val in enumerate([0.69, 0.66, 0.65]):
        learning = trend.epoch_end(epoch, None, val)
    assert detector.check(layer(cut, backprop=10, trend=learning)) is None  # still falling
    stalled = trend.epoch_end(3, None, 0.66)
    found = detector.check(layer(cut, backprop=10, trend=stalled))
    assert (found.kind, found.value, found.threshold) == ("truncation", cut.truncation_bias, 0.5)
    assert "cuts off 90% of the measured gradient" in found.message
    assert "validation loss has not fallen" in found.message
    assert f"backprop={cut.suggested_window}" in found.remedy
    assert detector.check(layer(cut, backprop=10, trend=stalled)) is None  # once per epoch
    # A window that keeps most of it (window 100 here: 33 % cut) is no alert.
    assert TruncationBias().check(layer(record(profile, window=100), backprop=100,
                                        trend=stalled)) is None


# Update ratios, per optimizer update ------------------------------------------------


def _ratios(detector, ratios, losses, updates=1):
    """Feeds (ratio, loss) steps after 5 steps at loss 1.0; returns findings."""
    for step in range(1, 6):
        assert detector.check(Evidence("step", step, 0, loss=1.0)) is None
    return [detector.check(Evidence("step", step, 0, loss=loss, update_ratios={"gru": ratio},
                                    step_updates=updates))
            for step, (ratio, loss) in enumerate(zip(ratios, losses), start=6)]


def test_update_ratio_is_judged_per_optimizer_update():
    # A TruncatedBPTT GRU at window 10: one step holds 25 window updates.
    found = _ratios(UpdateRatio(), (0.18, 0.15, 0.15, 0.16), (1.0, 1.2, 1.5, 2.0), updates=25)
    assert found == [None] * 4
    # The same ratios from single updates, while the loss rises above its
    # recent range: the updates rewrite the layer.
    found = _ratios(UpdateRatio(), (0.18, 0.15, 0.15), (1.0, 1.2, 1.5))
    assert found[:2] == [None, None] and found[2].value == 0.15
    assert "above 0.1 at 3 measured steps in a row, and the loss rose to 1.5, above the " \
        "highest of the 20 steps before step 6 (1)" in found[2].message
    wreck = UpdateRatio().check(Evidence("step", 1, 0, update_ratios={"a": 0.2, "b": 30.0},
                                         step_updates=10))
    assert wreck.layer == "b" and wreck.value == 3.0
    assert "over its 10 updates, at least 3 per update" in wreck.message


def test_large_updates_of_a_layer_while_the_loss_falls_are_learning():
    # Adam at 1e-2 on an embedding drawn from +-0.05: its first updates each
    # move it by a fifth to a third, while the loss sits or falls.
    found = _ratios(UpdateRatio(), (0.35, 0.27, 0.2, 0.14, 0.12), (1.0, 0.99, 1.0, 0.9, 0.8))
    assert found == [None] * 5


def test_a_noisy_floor_at_the_far_end_is_still_vanishing():
    # An input profile decayed to a noisy floor: one far value 4x the lowest
    # noise point is no rise of the information's position.
    rng = np.random.default_rng(0)
    floor = 1e-6 * rng.uniform(0.5, 1.5, 30)
    floor[-1] = 4 * floor.min()
    shape = np.concatenate([0.5 ** np.arange(20), floor])
    found = VanishingTail(patience=1).check(layer(record(shape, site="input"),
                                                  trend=_stalled()))
    assert found is not None and found.kind == "vanishing"
