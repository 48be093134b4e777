"""The rescue from a learning-rate fault (`exploding="rollback"`, `_rollback`),
and what clipping says when it cannot bound the step."""

import json
import math
import re
import warnings

import keras
import numpy as np
import pytest
from conftest import LearningRateFault

from keras_gradwatch import Alerting
from keras_gradwatch import GradientWarning
from keras_gradwatch import GradWatch
from keras_gradwatch import alerts
from keras_gradwatch import records
from keras_gradwatch.errors import InvalidInputError
from keras_gradwatch.watch import _rollback

FAULT_STEP = 27
FAULT_FACTOR = 1000.0


def regression(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = x @ np.linspace(-1, 1, 8) + 0.5 * np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n)
    return x, y.astype("float32")[:, None]


def fit_with_fault(watch, epochs=10):
    """Adam at 1e-2 on a small regression, 8 steps an epoch: the learning
    rate becomes 10 at step 27 (epoch 4). Returns the validation losses."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    callbacks = [LearningRateFault(FAULT_STEP, FAULT_FACTOR)] + ([watch] if watch is not None else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientWarning)
        history = model.fit(*regression(512, 0), batch_size=64, epochs=epochs, verbose=0,
                            validation_data=regression(256, 1), callbacks=callbacks)
    return history.history["val_loss"]


def test_the_learning_rate_fault_is_named_first_and_rolled_back(tmp_path):
    warned = GradWatch(tmp_path / "warn", plots=None)
    broken = fit_with_fault(warned)
    rescuer = GradWatch(tmp_path / "rollback", plots=None, alerting=Alerting(exploding="rollback"))
    rescued = fit_with_fault(rescuer)
    before = broken[2]  # after 24 steps, the last epoch end before the fault
    assert rescued[:3] == broken[:3]  # identical until the fault: opt-in changes nothing
    # Without the rescue the run does not come back; with it the run ends
    # finite, and within 2x the validation loss before the fault.
    assert broken[-1] > 100 * before
    assert math.isfinite(rescued[-1]) and rescued[-1] < 2 * before
    # The first alert at the fault names the learning rate first.
    for watch in (warned, rescuer):
        first = watch.alerts[0]
        assert first.kind == "exploding" and FAULT_STEP <= first.step <= FAULT_STEP + 1
        rise = f"The learning rate rose 1000x at step {FAULT_STEP}, from 0.01 to 10: lower it back"
        assert rise in first.message
        # The evidence comes first, then this suggestion before any other.
        before = first.message.split(rise)[0]
        assert not re.search(r"[Ll]ower the learning rate|[Cc]lip gradients", before)
        assert "global_clipnorm" not in first.message
    # One rollback, to a snapshot before the fault, with the rate 10x below
    # the one before the fault; in the alert, the summary and the records.
    summary = json.loads((tmp_path / "rollback" / "summary.json").read_text())
    (rollback,) = summary["rollbacks"]
    assert rollback["step"] == rescuer.alerts[0].step
    assert rollback["restored_step"] < FAULT_STEP
    assert rollback["learning_rate"] == pytest.approx(1e-3)
    assert "Rolled back to the weights and optimizer state of step" in rescuer.alerts[0].message
    recorded = [json.loads(line) for line in
                (tmp_path / "rollback" / "alerts.jsonl").read_text().splitlines()]
    assert "Rolled back" in recorded[0]["message"]
    rates = {r["step"]: r["lr"] for r in map(json.loads, (tmp_path / "rollback" / "steps.jsonl")
                                               .read_text().splitlines())}
    assert rates[FAULT_STEP - 1] == pytest.approx(1e-2) and rates[FAULT_STEP] == pytest.approx(10)
    assert rates[max(rates)] == pytest.approx(1e-3)


def test_snapshots_cost_at_most_their_share_of_the_time():
    assert _rollback.snapshot_period([], [0.01]) == 1
    assert _rollback.snapshot_period([1e-4], [0.01]) == 1  # 1 % of a step
    # The least cost (the first runs and other load cost more), the median step.
    assert _rollback.snapshot_period([9e-3, 4e-4, 5e-4], [0.3, 2e-3, 3e-3, 4e-3]) == 6
    assert _rollback.snapshot_period([0.5], [0.1], share=0.02) == 250


def test_a_non_finite_loss_is_rolled_back_too(tmp_path):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(1)])
    model.compile(keras.optimizers.SGD(1e-2), "mse")
    watch = GradWatch(tmp_path, plots=None, alerting=Alerting(nonfinite="rollback"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientWarning)
        history = model.fit(*regression(512, 0), batch_size=64, epochs=5, verbose=0,
                            callbacks=[LearningRateFault(FAULT_STEP, 1e4), watch])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["status"] == "completed" and len(summary["rollbacks"]) == 1
    (rolled,) = [a for a in watch.alerts if "Rolled back" in a.message]
    assert rolled.kind == "nonfinite" and rolled.step > FAULT_STEP
    # The epoch's running mean restarted after the rollback: finite again.
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert summary == records.summarize(records.load_run(tmp_path)) | {
        k: summary[k] for k in ("updated", "measurement_error")}


def test_rollback_is_an_action_of_exploding_and_nonfinite_only():
    actions = alerts.resolve_actions({"nonfinite": "rollback", "exploding": "rollback"})
    assert actions["nonfinite"] == actions["exploding"] == "rollback"
    with pytest.raises(InvalidInputError, match="vanishing='rollback'"):
        alerts.resolve_actions({"vanishing": "rollback"})


def small_model(optimizer, stateful=False):
    keras.utils.set_random_seed(0)
    if stateful:
        layers = [keras.Input(batch_shape=(4, None, 2)),
                  keras.layers.SimpleRNN(3, stateful=True), keras.layers.Dense(1)]
    else:
        layers = [keras.Input((2,)), keras.layers.Dense(3), keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(optimizer, "mse")
    return model


def test_a_healthy_run_with_the_action_trains_exactly_as_without(tmp_path):
    x = np.random.default_rng(0).normal(size=(64, 2)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    for make in (lambda: 0.05,
                 lambda: keras.optimizers.schedules.ExponentialDecay(0.05, 4, 0.5)):
        weights = []
        rollback = Alerting(nonfinite="rollback", exploding="rollback")
        for watch in (None, GradWatch(tmp_path / str(len(weights)), plots=None,
                                      alerting=rollback)):
            model = small_model(keras.optimizers.Adam(make()))
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
                      callbacks=[watch] if watch else [])
            weights.append(model.get_weights())
        for a, b in zip(*weights):
            np.testing.assert_array_equal(a, b)
        # A schedule wrapped for the fit and never scaled is unwrapped after it.
        assert not isinstance(model.optimizer.learning_rate, keras.Variable) or make() == 0.05


def test_rollback_restores_the_trusted_snapshot_and_lowers_the_rate_until_the_floor():
    model = small_model(keras.optimizers.Adam(0.1))
    x = np.ones((4, 2), "float32")
    rollback = _rollback.Rollback(model, step=0)
    rollback.share = math.inf  # a snapshot at every healthy step, whatever it costs
    start = [w.copy() for w in model.get_weights()]
    for step in (1, 2, 3):  # healthy steps: snapshots after steps 1, 2, 3
        model.train_on_batch(x, x[:, :1])
        rollback.after_step(step, healthy=True)
    after_two = rollback.trusted.values[: len(start)]
    assert rollback.trusted.step == 2 and rollback.pending.step == 3
    model.train_on_batch(x, x[:, :1])
    rollback.after_step(4, healthy=False)  # an alert: the newest may hold the cause
    assert rollback.pending is None
    sentence, stop = rollback.roll_back(4)
    assert not stop and "of step 2" in sentence and "lowered 10x to 0.01" in sentence
    for restored, kept in zip(model.get_weights(), after_two):
        np.testing.assert_array_equal(restored, kept)
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    assert rollback.roll_back(4) == ("(Rolled back at this step already.)", False)
    # Each rollback lowers it again, until it would fall below FLOOR x the start.
    assert not rollback.roll_back(5)[1] and not rollback.roll_back(6)[1]
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(1e-4)
    sentence, stop = rollback.roll_back(7)
    assert stop and "Stopping training" in sentence and len(rollback.rollbacks) == 3
    assert any(not np.array_equal(a, b) for a, b in zip(start, model.get_weights()))


def test_rollback_resets_a_stateful_layer_and_refuses_a_callable_rate():
    model = small_model(keras.optimizers.SGD(0.1), stateful=True)
    x = np.ones((4, 3, 2), "float32")
    model.train_on_batch(x, np.ones((4, 1), "float32"))
    rollback = _rollback.Rollback(model, step=1)
    (state,) = rollback.states
    assert np.abs(state.numpy()).sum() > 0
    sentence, _ = rollback.roll_back(2)
    assert "the recurrent state reset" in sentence and np.abs(state.numpy()).sum() == 0
    with pytest.raises(InvalidInputError, match="a callable"):
        _rollback.Rollback(small_model(keras.optimizers.SGD(lambda: 0.1)), step=0)


def test_a_schedule_is_scaled_by_a_rollback_and_kept_scaled():
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, 10, 0.5)
    model = small_model(keras.optimizers.Adam(schedule))
    rollback = _rollback.Rollback(model, step=0)
    assert isinstance(rollback.schedule, _rollback.ScaledSchedule)
    assert rollback.rate() == pytest.approx(0.1)
    sentence, _ = rollback.roll_back(1)
    assert "lowered 10x to 0.01 (the schedule scaled)" in sentence
    assert rollback.rate() == pytest.approx(0.01)
    rollback.end()  # it rolled back: the model keeps the lower rate
    config = keras.optimizers.schedules.serialize(rollback.schedule)
    copy = keras.optimizers.schedules.deserialize(config)
    assert float(copy(10)) == pytest.approx(0.005)


def test_clipping_says_when_it_cannot_bound_the_step(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 2)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    watch = GradWatch(tmp_path / "adam", plots=None, clip="auto")
    model = small_model(keras.optimizers.Adam(0.01))
    with pytest.warns(UserWarning, match="Clipping cannot bound the step of keras.optimizers.Adam"):
        for _ in range(2):  # once per callback, not once per fit
            model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[watch])
    summary = json.loads((tmp_path / "adam" / "summary.json").read_text())
    settings = json.loads((tmp_path / "adam" / "run.json").read_text())
    assert "exploding='rollback'" in summary["clip_note"]
    assert settings["optimizer"]["clip_note"] == summary["clip_note"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        small_model(keras.optimizers.SGD(0.01)).fit(
            x, y, batch_size=8, epochs=1, verbose=0,
            callbacks=[GradWatch(tmp_path / "sgd", plots=None, clip="auto")])
    assert json.loads((tmp_path / "sgd" / "summary.json").read_text())["clip_note"] is None
