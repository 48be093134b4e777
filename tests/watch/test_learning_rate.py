"""The optimizer in view: the learning rate's history, reading and drawing,
and the advice fit to the optimizer (`_lr_history`, `_learning_rate`,
`_advice`, `plots._draw_learning_rate`)."""

import doctest
import json
import math

import keras
import numpy as np
import pytest
from conftest import LearningRateFault
from conftest import write_synthetic_run

from keras_gradwatch import GradWatch
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import alerts
from keras_gradwatch import plots
from keras_gradwatch import records
from keras_gradwatch.watch import _advice
from keras_gradwatch.watch import _alerting
from keras_gradwatch.watch import _learning_rate
from keras_gradwatch.watch import _lr_history


@pytest.mark.parametrize("module", [_lr_history, _advice])
def test_docstring_examples_of_the_pure_modules(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


# The pure history ------------------------------------------------------------

def history_of(rates, first=1):
    made = _lr_history.LearningRateHistory()
    for step, rate in enumerate(rates, start=first):
        made.add(step, rate)
    return made


def test_a_step_change_is_named_with_its_step_and_values():
    made = history_of([1e-3] * 26 + [1.0] * 5)
    rise = made.rise_before(28)
    assert (rise.factor, rise.before, rise.after, rise.start, rise.end) == (
        pytest.approx(1000.0), 1e-3, 1.0, 26, 27)
    assert rise.sentence() == "the learning rate rose 1000x at step 27, from 0.001 to 1"
    # Before the change, and at the step before it, nothing rose.
    assert made.rise_before(26) is None and made.rise_before(1) is None
    assert made.at(27) == 1.0 and made.at(26) == 1e-3 and made.at(0) is None
    assert made.latest() == 1.0 and len(made) == 31


def test_a_ramp_is_named_from_its_lowest_to_where_it_reached_the_level():
    made = history_of([1e-4 * (1 + i) for i in range(10)] + [1e-3] * 3)
    rise = made.rise_before(12)
    assert rise.start == 1 and rise.end == 10 and rise.factor == pytest.approx(10.0)
    assert rise.sentence().startswith("the learning rate rose 10x between steps 1 and 10")


def test_what_does_not_count_as_a_rise():
    # Less than doubled; constant; decaying.
    assert history_of([1e-3] * 5 + [1.9e-3]).rise_before(6) is None
    assert history_of([2e-3] * 5 + [4e-3]).rise_before(6).factor == pytest.approx(2.0)
    assert history_of([1e-3] * 50).rise_before(50) is None
    assert history_of([1e-3 * 0.9**i for i in range(50)]).rise_before(50) is None
    # A rise older than the look-back (the detectors' 100 steps) is not "before" it.
    old = history_of([1e-3] * 10 + [1e-2] * 95)
    assert old.rise_before(105).start == 10
    for step in range(106, 112):
        old.add(step, 1e-2)
    assert old.rise_before(111) is None
    # One value is no history; None, NaN, 0 are not learning rates.
    made = history_of([1e-3, None, math.nan, 0.0])
    assert len(made) == 1 and made.rise_before(4) is None


def test_a_step_count_that_goes_back_starts_the_history_over():
    made = history_of([1e-3] * 5 + [1.0])
    made.add(3, 1.0)
    assert len(made) == 1 and made.rise_before(3) is None


# The advice -------------------------------------------------------------------

RISE = _lr_history.Rise(1000.0, 1e-3, 1.0, 26, 27)


def test_after_a_rise_the_first_suggestion_is_the_learning_rate_for_every_optimizer():
    for family in _advice.FAMILIES:
        text = _advice.advice(family, "keras.optimizers.X", RISE, clipnorm=0.5, rate=1.0)
        assert text.startswith("The learning rate rose 1000x at step 27, from 0.001 to 1: "
                               "lower it back"), family
    adaptive = _advice.advice("adaptive", "keras.optimizers.Adam", RISE, clipnorm=0.5)
    assert "global_clipnorm" not in adaptive and "does not bound it" in adaptive
    sgd = _advice.advice("sgd", "keras.optimizers.SGD", RISE, clipnorm=0.5)
    assert "Or clip gradients" in sgd and "SGD(..., global_clipnorm=0.5)" in sgd


def test_without_a_rise_adaptive_optimizers_are_told_the_learning_rate_sgd_clipping():
    adaptive = _advice.advice("adaptive", "keras.optimizers.Adam", clipnorm=0.5, rate=1e-3)
    assert adaptive.startswith("Lower the learning rate (e.g. to 0.0001, a tenth of the "
                               "current 0.001), or warm it up")
    assert "global_clipnorm" not in adaptive
    sgd = _advice.advice("sgd", "keras.optimizers.SGD", clipnorm=0.5, rate=0.1)
    assert sgd.startswith("Clip gradients around the typical norm")
    assert sgd.endswith("Or lower the learning rate (e.g. to 0.01, a tenth of the current 0.1).")
    unknown = _advice.advice("unknown", "MyOptimizer", clipnorm=None)
    assert unknown.startswith("Lower the learning rate, or clip gradients, e.g. "
                              "optimizer=MyOptimizer(")
    with pytest.raises(ValueError, match="family='adam'"):
        _advice.advice("adam", "keras.optimizers.Adam")


def test_clip_note_only_where_clipping_cannot_bound_the_step():
    assert _advice.clip_note("sgd", "keras.optimizers.SGD") is None
    assert _advice.clip_note("unknown", "Mine") is None
    note = _advice.clip_note("adaptive", "keras.optimizers.RMSprop")
    assert "keras.optimizers.RMSprop" in note and "exploding='rollback'" in note


def test_the_alert_desk_asks_the_advice_with_its_history_at_the_current_step():
    where = {"step": 28}
    desk = _alerting.AlertDesk(
        alerts.resolve_actions(), record=lambda a: None,
        stop=lambda: None, where=lambda: (where["step"], 0),
    )
    desk.optimizer, desk.family = "keras.optimizers.Adam", _advice.ADAPTIVE
    desk.step_norms.add(2.0)
    for step in range(1, 29):
        desk.learning_rates.add(step, 1e-3 if step < 27 else 1.0)
    assert desk.clip_advice().startswith("The learning rate rose 1000x at step 27")
    where["step"] = 200  # the rise is out of the look-back
    assert desk.clip_advice().startswith("Lower the learning rate (e.g. to 0.1")


# The optimizer's family and the reader -------------------------------------------

def test_optimizer_family():
    for optimizer in (keras.optimizers.Adam(), keras.optimizers.AdamW(),
                      keras.optimizers.RMSprop(), keras.optimizers.Lion(),
                      keras.optimizers.Adagrad(),
                      keras.optimizers.LossScaleOptimizer(keras.optimizers.Adam())):
        assert _learning_rate.family(optimizer) == _advice.ADAPTIVE, optimizer
    assert _learning_rate.family(keras.optimizers.SGD(momentum=0.9)) == _advice.SGD

    class Mine(keras.optimizers.Optimizer):
        pass

    assert _learning_rate.family(Mine(0.1)) == _advice.UNKNOWN


def built(optimizer):
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    optimizer.build(layer.trainable_variables)
    return optimizer


def test_reader_of_a_variable_follows_assignments():
    optimizer = built(keras.optimizers.Adam(1e-3))
    reader = _learning_rate.LearningRateReader(optimizer)
    assert reader.kind == "variable" and reader.read() == pytest.approx(1e-3)
    optimizer.learning_rate = 0.5
    assert reader.read() == 0.5
    assert _learning_rate.LearningRateReader(None).read() is None


@pytest.mark.parametrize("loss_scaled, vector", [(False, True), (True, True), (False, False)])
def test_reader_of_a_schedule_gives_the_rate_of_the_latest_update(loss_scaled, vector):
    if vector:  # called once on a vector of update counts per block
        schedule = keras.optimizers.schedules.PiecewiseConstantDecay([60, 1600], [1e-3, 1e-4, 1e-5])
    else:  # its warm-up takes one step at a time: mapped in a compiled loop
        schedule = keras.optimizers.schedules.CosineDecay(
            1e-4, 3000, warmup_target=1e-3, warmup_steps=100)
    optimizer = keras.optimizers.Adam(schedule)
    if loss_scaled:
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    built(optimizer)
    reader = _learning_rate.LearningRateReader(optimizer)
    assert reader.kind == "schedule"
    # Before any update: the first update's; then update n - 1's after n updates,
    # within the first block of values, past it (a new block) and back.
    for updates in (0, 1, 50, 61, 150, 1500, 1601, 2000, 40):
        optimizer.iterations.assign(updates)
        assert reader.read() == pytest.approx(float(schedule(max(updates - 1, 0))), rel=1e-6)
    assert (reader._mapped is None) == vector
    assert reader.reads(optimizer) and not reader.reads(keras.optimizers.Adam(schedule))


def test_a_reader_that_fails_stops_reading_instead_of_raising():
    optimizer = keras.optimizers.Adam(lambda: 1 / 0)
    reader = _learning_rate.LearningRateReader.__new__(_learning_rate.LearningRateReader)
    reader.optimizer, reader.kind = optimizer, "callable"
    assert reader.read() is None and reader.kind is None


# In GradWatch's records --------------------------------------------------------

def step_records(folder):
    return [json.loads(line) for line in (folder / "steps.jsonl").read_text().splitlines()]


def test_steps_record_a_changed_learning_rate_and_training_is_unchanged(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    weights = []
    for watch in (None, GradWatch(tmp_path, plots=None)):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
        model.compile(keras.optimizers.SGD(0.01), "mse")
        callbacks = [LearningRateFault(5, 3.0)] + ([watch] if watch else [])
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=callbacks)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)
    rates = [r["lr"] for r in step_records(tmp_path)]
    assert rates == [pytest.approx(0.01)] * 4 + [pytest.approx(0.03)] * 4
    assert json.loads((tmp_path / "run.json").read_text())["optimizer"] == {
        "name": "keras.optimizers.SGD", "family": "sgd", "clip_note": None}


def test_truncated_bptt_records_the_rate_of_its_last_window_update(tmp_path):
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input(batch_shape=(4, None, 2)),
                              keras.layers.LSTM(3, stateful=True, return_sequences=True),
                              keras.layers.Dense(1)])
    schedule = keras.optimizers.schedules.PolynomialDecay(0.1, 20)
    wrapped = TruncatedBPTT(inner, window=2)
    wrapped.compile(keras.optimizers.SGD(schedule), "mse")
    x = np.random.default_rng(0).normal(size=(8, 6, 2)).astype("float32")
    wrapped.fit(x, x[..., :1], epochs=2, verbose=0, callbacks=[GradWatch(tmp_path, plots=None)])
    # 3 windows per batch: step s ends with update 3s - 1 (counted from 0).
    rates = [r["lr"] for r in step_records(tmp_path)]
    assert rates == [pytest.approx(float(schedule(3 * s - 1))) for s in range(1, 5)]


def test_the_norms_plot_draws_the_learning_rate_only_when_recorded(tmp_path):
    from matplotlib.figure import Figure

    run = records.load_run(write_synthetic_run(tmp_path / "plain"))
    assert plots._draw_learning_rate(Figure().subplots(), run) is None
    folder = write_synthetic_run(tmp_path / "rates")
    lines = (folder / records.STEPS).read_text().splitlines()
    steps = [{**json.loads(line), "lr": 1e-3 if i < 5 else 1.0} for i, line in enumerate(lines)]
    (folder / records.STEPS).write_text("".join(json.dumps(s) + "\n" for s in steps))
    run = records.load_run(folder)
    ax = Figure().subplots()
    right = plots._draw_learning_rate(ax, run)
    assert right.get_ylabel() == "learning rate" and right.get_yscale() == "log"
    np.testing.assert_allclose(right.get_lines()[0].get_ydata(), [s["lr"] for s in steps])
    assert "learning rate (right axis)" in ax.get_legend_handles_labels()[1]
    assert plots.plot_norms(run).stat().st_size > 20_000
