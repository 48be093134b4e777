"""Tests of the `GradWatch` callback."""

import json
import math
import pathlib
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch import Alerting
from keras_gradwatch import GradientAlertError
from keras_gradwatch import GradientWarning
from keras_gradwatch import GradWatch
from keras_gradwatch import InvalidInputError
from keras_gradwatch import Measuring
from keras_gradwatch import RunDirectoryError
from keras_gradwatch import RunFormatError
from keras_gradwatch import RunRecordWarning
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import layers
from keras_gradwatch import records
from keras_gradwatch.watch import _drawing

B, T, F = 8, 12, 2


def data(n=32, t=T, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(n, t, F)).astype("float32")
    return x, x.sum(axis=1)[:, :1] / t


def lstm_model(stateful=False, return_sequences=False, units=6):
    model = keras.Sequential(
        [
            keras.Input(batch_shape=(B if stateful else None, None, F)),
            layers.LSTM(units, stateful=stateful, return_sequences=return_sequences, name="lstm"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    return model


def exploding_model(stateful=False):
    rnn = layers.SimpleRNN(
        16,
        activation="relu",
        recurrent_initializer=keras.initializers.Orthogonal(gain=1.6),
        stateful=stateful,
        name="relu_rnn",
    )
    return keras.Sequential(
        [keras.Input(batch_shape=(32, None, 2)), rnn, keras.layers.Dense(1)]
    )


def exploding_data():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(256, 40, 2)).astype("float32")
    return x, x.sum(axis=1)[:, :1]


def fit(model, x, y, callbacks, **kwargs):
    kwargs.setdefault("epochs", 2)
    kwargs.setdefault("batch_size", B)
    return model.fit(x, y, verbose=0, callbacks=callbacks, **kwargs)


def quiet(**kwargs):
    """Warnings of every kind collected, not printed."""
    catcher = warnings.catch_warnings(record=True)
    caught = catcher.__enter__()
    warnings.simplefilter("always")
    return catcher, caught


# Records ---------------------------------------------------------------------


def test_plain_recurrent_model_records(tmp_path):
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data()
    watch = GradWatch(tmp_path / "run", every=2)
    history = fit(model, x, y, [watch])
    run = records.load_run(tmp_path / "run")
    assert [s["step"] for s in run.steps] == list(range(1, 9))
    assert [m["step"] for m in run.measurements] == [0, 2, 4, 6, 8]
    first = run.measurements[0]
    assert set(first["layer_norms"]) == {"lstm", "head"}
    assert first["layers"]["lstm"]["site"] == "state"
    profile = run.profiles(first)["lstm"]
    assert profile.shape == (T,) and np.all(profile > 0)
    with np.load(tmp_path / "run" / first["profiles"], allow_pickle=False) as f:
        assert f["lstm"].shape == (T,)
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["steps"] == 8 and summary["epochs"] == 2
    assert summary["layers"]["lstm"]["horizon"] >= 1
    assert summary["median_grad_norm"] > 0
    assert summary["suggested_clipnorm"] == pytest.approx(summary["median_grad_norm"], rel=0.05)
    # History gains grad_norm only (the last step's of each epoch); the
    # measurements are in the records, not in the logs or progress bar.
    assert sorted(history.history) == ["grad_norm", "loss"]
    assert history.history["grad_norm"][-1] == pytest.approx(run.steps[-1]["grad_norm"])
    # GradWatch's own time, and the fit's, wall clock and CPU.
    own = summary["own_time"]
    assert set(own) == {"seconds", "cpu_seconds", "fit_seconds", "fit_cpu_seconds",
                        "one_off_seconds", "one_off_cpu_seconds"}
    # Measurements that traced: their cost is told apart, and is part of it.
    traced = sum(m["seconds"] for m in run.measurements if m["traced"])
    assert 0 < own["one_off_seconds"] == pytest.approx(traced)
    assert own["one_off_seconds"] < own["seconds"]
    assert 0 < own["one_off_cpu_seconds"] < own["cpu_seconds"]
    assert 0 < own["seconds"] < own["fit_seconds"]
    assert 0 < own["cpu_seconds"] < own["fit_cpu_seconds"]
    assert run.settings["fits"][0]["first_step"] == 0


def test_feed_forward_model_gets_gradient_norms_only(tmp_path):
    model = keras.Sequential(
        [keras.Input((5,)), keras.layers.Dense(4, name="hidden"), keras.layers.Dense(1, name="out")]
    )
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(0).normal(size=(32, 5)).astype("float32")
    watch = GradWatch(tmp_path, every=1)
    history = fit(model, x, x[:, :1], [watch], epochs=1)
    run = records.load_run(tmp_path)
    assert len(run.measurements) == 5
    assert run.measurements[0]["profiles"] is None
    assert set(run.measurements[0]["layer_norms"]) == {"hidden", "out"}
    assert sorted(history.history) == ["grad_norm", "loss"]


def test_subclassed_model_with_tf_data_and_validation(tmp_path):
    class Regressor(keras.Model):
        def __init__(self):
            super().__init__()
            self.rnn = keras.layers.GRU(4, name="gru")
            self.out = keras.layers.Dense(1)

        def call(self, x):
            return self.out(self.rnn(x))

    model = Regressor()
    model.compile(optimizer="adam", loss="mse")
    x, y = data()
    train = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)
    history = model.fit(
        train, validation_data=(x[:8], y[:8]), epochs=2, verbose=0,
        callbacks=[GradWatch(tmp_path, every=3)],
    )
    run = records.load_run(tmp_path)
    assert run.measurements[0]["layers"]["gru"]["site"] == "input"
    assert sorted(history.history) == ["grad_norm", "loss", "val_loss"]


def test_py_dataset_input(tmp_path):
    x, y = data()

    class Batches(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return x[i * B : (i + 1) * B], y[i * B : (i + 1) * B]

    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    model.fit(Batches(), epochs=1, verbose=0, callbacks=[GradWatch(tmp_path)])
    run = records.load_run(tmp_path)
    assert len(run.steps) == 4 and run.measurements[0]["step"] == 0


def test_truncated_bptt_model_records_every_step_norm(tmp_path):
    model = TruncatedBPTT(lstm_model(stateful=True, return_sequences=True), window=4)
    model.compile(optimizer="adam", loss="mse")
    x, _ = data()
    y = np.cumsum(x[..., :1], axis=1) / T
    fit(model, x, y, [GradWatch(tmp_path)])
    run = records.load_run(tmp_path)
    assert all(s["grad_norm"] > 0 for s in run.steps)
    assert all(s["skipped_updates"] == 0 for s in run.steps)
    assert run.measurements[0]["backprop"] == 4
    assert run.settings["tbptt"] == {"window": 4, "backprop": 4, "reset": "batch"}
    summary = run.summary
    assert summary["skipped_updates"] == 0
    assert summary["layers"]["lstm"]["backprop"] == 4
    bias = summary["layers"]["lstm"]["truncation_bias"]
    assert 0.0 <= bias <= 1.0


def test_reuse_across_fit_calls_continues_one_run(tmp_path):
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data()
    watch = GradWatch(tmp_path, every=3)
    for _ in range(3):
        fit(model, x, y, [watch], epochs=1)
    run = records.load_run(tmp_path)
    assert [s["step"] for s in run.steps] == list(range(1, 13))
    assert [s["epoch"] for s in run.steps] == [0] * 4 + [1] * 4 + [2] * 4
    assert [f["first_step"] for f in run.settings["fits"]] == [0, 4, 8]
    assert [m["index"] for m in run.measurements] == list(range(len(run.measurements)))
    # A new callback on the same folder continues, never overwrites.
    fit(model, x, y, [GradWatch(tmp_path, every=3)], epochs=1)
    run = records.load_run(tmp_path)
    assert [s["step"] for s in run.steps] == list(range(1, 17))
    assert len(run.settings["fits"]) == 4
    indices = [m["index"] for m in run.measurements]
    assert indices == list(range(len(indices)))


def test_unwritable_log_dir_fails_before_any_step(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    model = lstm_model()
    model.compile(optimizer="sgd", loss="mse")
    before = [w.copy() for w in model.get_weights()]
    x, y = data()
    with pytest.raises(RunDirectoryError, match="a_file"):
        fit(model, x, y, [GradWatch(blocker / "run")])
    assert int(model.optimizer.iterations.numpy()) == 0
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_records_stay_readable_after_an_interrupted_fit(tmp_path):
    x, y = data()

    class Failing(keras.utils.PyDataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            if i == 2:
                raise KeyboardInterrupt
            return x[i * B : (i + 1) * B], y[i * B : (i + 1) * B]

    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    with pytest.raises((KeyboardInterrupt, tf.errors.UnknownError)):  # raised in a data worker
        model.fit(Failing(), epochs=1, verbose=0, callbacks=[GradWatch(tmp_path, every=1)])
    run = records.load_run(tmp_path)
    assert run.summary["status"] == "interrupted"
    assert [s["step"] for s in run.steps] == [1, 2]
    assert len(run.measurements) == 3
    for m in run.measurements:
        run.profiles(m)
    # Only whole files exist: no temporary file is left behind.
    assert not [p for p in tmp_path.rglob("*.tmp")]


def test_crash_mid_line_is_tolerated_and_damage_elsewhere_reported(tmp_path):
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data()
    fit(model, x, y, [GradWatch(tmp_path, every=2)], epochs=1)
    steps = tmp_path / "steps.jsonl"
    with open(steps, "a") as f:
        f.write('{"step": 5, "epo')  # a write cut short by a crash
    assert len(records.load_run(tmp_path).steps) == 4
    steps.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.warns(RunRecordWarning, match="line 2"):  # skipped, the rest is read
        assert [s["step"] for s in records.load_run(tmp_path).steps] == [1, 2]


# It changes nothing ------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True])
def test_weights_after_fit_equal_weights_without_callback(tmp_path, wrapped):
    x, _ = data()
    y = np.cumsum(x[..., :1], axis=1) / T
    weights = []
    for callbacks in ([], [GradWatch(tmp_path, every=1)]):
        keras.utils.set_random_seed(7)
        inner = lstm_model(stateful=wrapped, return_sequences=True)
        model = TruncatedBPTT(inner, window=5) if wrapped else inner
        model.compile(optimizer="adam", loss="mse")
        fit(model, x, y, callbacks, epochs=2)
        weights.append(inner.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


# Alerts ------------------------------------------------------------------------


def test_exploding_alert_comes_before_the_loss_turns_nan(tmp_path):
    model = exploding_model()
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    x, y = exploding_data()
    watch = GradWatch(tmp_path)
    with pytest.warns(GradientWarning, match="gradient norm jumped"):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[watch])
    run = records.load_run(tmp_path)
    first_nan = min(s["step"] for s in run.steps if not math.isfinite(records.number(s["loss"])))
    exploding = [a for a in run.alerts if a["kind"] == "exploding"]
    # The norm leaps by orders of magnitude at the step before the loss turns
    # NaN: its loss (1133, 3x its level) is that of the batch before the
    # update, no evidence yet. The verdict comes with the NaN that follows
    # (an update ratio, when taken at that step, says it one step earlier).
    assert exploding and exploding[0]["step"] <= first_nan
    spike = next(a for a in exploding if a["signal"] == "grad_norm")
    assert spike["step"] == first_nan and spike["value"] > 1e4
    assert f"at step {first_nan - 1}" in spike["message"]
    assert f"turned nan at step {first_nan}" in spike["message"]
    assert "keras.optimizers.SGD(..., global_clipnorm=" in spike["message"]
    nonfinite = [a for a in run.alerts if a["kind"] == "nonfinite"]
    assert nonfinite and nonfinite[0]["layer"] == "relu_rnn"
    assert run.alerts.index(spike) < run.alerts.index(nonfinite[0])
    assert run.summary["status"] == "stopped"  # the default action for NaN
    assert model.stop_training


def test_exploding_alert_on_truncated_bptt_and_clipnorm_fixes_it(tmp_path):
    x, y = exploding_data()
    model = TruncatedBPTT(exploding_model(stateful=True), window=10, backprop=40)
    model.compile(optimizer=keras.optimizers.SGD(1e-3), loss="mse")
    with pytest.warns(GradientWarning):
        model.fit(x, y, epochs=5, verbose=0, callbacks=[GradWatch(tmp_path / "a")])
    run = records.load_run(tmp_path / "a")
    assert run.alerts[0]["kind"] == "exploding"
    clipnorm = run.summary["suggested_clipnorm"]
    assert clipnorm > 0
    keras.utils.set_random_seed(0)
    clipped = TruncatedBPTT(exploding_model(stateful=True), window=10, backprop=40)
    clipped.compile(optimizer=keras.optimizers.SGD(1e-3, global_clipnorm=clipnorm), loss="mse")
    catcher, caught = quiet()
    try:
        history = clipped.fit(
            x, y, epochs=3, verbose=0,
            callbacks=[GradWatch(tmp_path / "b", alerting=Alerting(nonfinite="warn"))]
        )
    finally:
        catcher.__exit__(None, None, None)
    assert all(math.isfinite(v) for v in history.history["loss"])


def test_a_bad_batch_is_no_blow_up_and_the_user_maximum_is(tmp_path):
    x, _ = data(n=64)
    y = np.cumsum(x[..., :1], axis=1) / T
    x[56:] *= 300.0  # the last batch of each epoch makes a huge gradient
    model = TruncatedBPTT(lstm_model(stateful=True, return_sequences=True), window=4)
    model.compile(optimizer="sgd", loss="mse")
    seen = []
    fit(model, x, y, [GradWatch(tmp_path / "a", alerting=Alerting(exploding=seen.append))],
        epochs=2, shuffle=False)
    steps = records.load_run(tmp_path / "a").steps
    losses = {s["step"]: s["loss"] for s in steps}
    norms = {s["step"]: s["grad_norm"] for s in steps}
    # Its loss and norm leap (10x the highest of the steps before), and the
    # next epoch starts where it was: a bad batch, not a blow-up.
    assert losses[8] > 10 * max(losses[s] for s in range(1, 8))
    assert norms[8] > 10 * max(norms[s] for s in range(1, 8))
    assert losses[9] < max(losses[s] for s in range(1, 8))
    assert seen == []
    model = TruncatedBPTT(lstm_model(stateful=True, return_sequences=True), window=4)
    model.compile(optimizer="sgd", loss="mse")
    seen = []
    alerting = Alerting(exploding=seen.append, max_grad_norm=1e-6)
    fit(model, x[:8], y[:8], [GradWatch(tmp_path / "b", alerting=alerting)], epochs=1)
    assert seen[0].threshold == 1e-6 and "max_grad_norm" in seen[0].message


def test_vanishing_alert_for_a_tanh_rnn_that_cannot_learn(tmp_path):
    # The target is the first step's input, 60 steps back: a tanh RNN's
    # gradient does not reach it, and the validation loss stalls.
    x, y = data(n=96, t=60)
    y = x[:, 0, :1].copy()
    model = keras.Sequential(
        [keras.Input((None, F)), layers.SimpleRNN(8, name="tanh_rnn"), keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse")
    seen = []
    history = model.fit(x[:64], y[:64], validation_data=(x[64:], y[64:]), batch_size=4,
                        epochs=14, verbose=0,
                        callbacks=[GradWatch(tmp_path, every=8,
                                             alerting=Alerting(vanishing=seen.append))])
    assert seen and seen[0].kind == "vanishing" and seen[0].layer == "tanh_rnn"
    # Not in the first epoch, nor before 200 updates, and only once the
    # validation loss stopped falling (the training loss still falls: the
    # model memorizes the training rows).
    assert seen[0].epoch >= 1 and seen[0].step >= 200
    val = history.history["val_loss"]
    stalled_at = seen[0].epoch - 1  # the latest epoch end before the alert
    assert val[stalled_at] >= 0.99 * min(val[:stalled_at])
    assert history.history["loss"][-1] < 0.9 * history.history["loss"][0]
    assert seen[0].value < 1e-3 and "reaches 59 steps back" in seen[0].message
    assert "the validation loss has not fallen by 1%" in seen[0].message
    assert "use an LSTM or GRU" in seen[0].message


@pytest.mark.parametrize("action", ["warn", "stop", "raise", "callable"])
def test_nonfinite_actions(tmp_path, action):
    model = lstm_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = data()
    y[10] = np.nan  # the second batch
    seen = []
    nonfinite = seen.append if action == "callable" else action
    watch = GradWatch(tmp_path, alerting=Alerting(nonfinite=nonfinite))
    if action == "raise":
        with pytest.raises(GradientAlertError, match="not finite") as info:
            fit(model, x, y, [watch], shuffle=False)
        assert info.value.alert.kind == "nonfinite"
        assert records.load_run(tmp_path).summary["status"] == "raised"
        return
    catcher, caught = quiet()
    try:
        fit(model, x, y, [watch], shuffle=False)
    finally:
        catcher.__exit__(None, None, None)
    run = records.load_run(tmp_path)
    first = run.alerts[0]
    assert first["kind"] == "nonfinite" and first["step"] == 2
    assert "data" in first["message"]  # weights and gradients were finite
    if action == "stop":
        assert len(run.steps) == 2 and run.summary["status"] == "stopped"
    if action == "warn":
        assert any(issubclass(w.category, GradientWarning) for w in caught)
        assert len(run.steps) == 8
    if action == "callable":
        assert seen and seen[0].kind == "nonfinite"


def test_repeated_alerts_are_rate_limited(tmp_path):
    model = lstm_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = data(n=8 * 20)
    y[:] = np.nan  # every step's loss is NaN
    catcher, caught = quiet()
    try:
        watch = GradWatch(tmp_path, alerting=Alerting(nonfinite="warn"))
        fit(model, x, y, [watch], epochs=1)
    finally:
        catcher.__exit__(None, None, None)
    # The loss at every step is one alert, the probe batch's gradient at
    # every measurement another; each is reported at its 1st, 2nd, 4th...
    # occurrence.
    losses = [a for a in watch.alerts if a.signal == "loss"]
    assert [a.step for a in losses] == [1, 2, 4, 8, 16]
    assert [a.suppressed for a in losses] == [0, 0, 1, 3, 7]
    run = records.load_run(tmp_path)
    checked = [m for m in run.measurements if m["reason"] != "diagnosis"]
    probes = [a for a in watch.alerts if a.signal == "layer_norm"]
    assert len(probes) == len([k for k in (1, 2, 4, 8, 16, 32) if k <= len(checked)])
    # NaN targets make NaN gradients: not an exploding gradient.
    assert {a.kind for a in watch.alerts} == {"nonfinite"}
    assert sum(issubclass(w.category, GradientWarning) for w in caught) == len(watch.alerts)
    assert len(watch.alerts) == len(losses) + len(probes)
    assert run.summary["alerts"]["nonfinite"] == 20 + len(checked)


def test_a_run_whose_every_value_is_nan_is_still_drawn(tmp_path):
    # Every loss, norm and profile NaN: nothing positive for a log axis, and
    # the plots of such a run are the ones its user needs most.
    model = lstm_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = data(n=8 * 6)
    y[:] = np.nan
    catcher, _ = quiet()
    try:
        watch = GradWatch(tmp_path, alerting=Alerting(nonfinite="warn"), plots=None, overhead=100.0)
        fit(model, x, y, [watch], epochs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "drawing failed" warning
            assert watch.draw() is not None
    finally:
        catcher.__exit__(None, None, None)
    for name in ("gradient_norms.png", "depth_profile.png", "report.html"):
        assert (tmp_path / name).stat().st_size > 0, name


def test_probe_data_argument_is_measured_before_training(tmp_path):
    model = lstm_model()
    model.compile(optimizer="sgd", loss="mse")
    x, y = data()
    probe_x = np.ones((3, 30, F), "float32")
    measuring = Measuring(probe_data=(probe_x, y[:3]))
    fit(model, x, y, [GradWatch(tmp_path, every=100, measuring=measuring)], epochs=1)
    run = records.load_run(tmp_path)
    assert run.measurements[0]["step"] == 0
    assert run.measurements[0]["length"] == 30 and run.measurements[0]["sequences"] == 3


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Alerting(nonfinite="explode"), "nonfinite='explode'"),
        (lambda: Measuring(loss_steps="first"), "loss_steps='first'"),
        (lambda: Alerting(warmup=1.5), "warmup=1.5"),
        (lambda: Alerting(actions={"exploding": "clip"}), "pass exploding='clip' instead"),
    ],
)
def test_bad_group_fields_are_rejected_when_the_group_is_made(make, match):
    with pytest.raises(InvalidInputError, match=match):
        make()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": 0}, "every=0"),
        ({"overhead": -1}, "overhead=-1"),
        ({"alerting": {"spike_factor": 20}}, "alerting=.*Pass a keras_gradwatch.Alerting"),
        ({"measuring": "all"}, "measuring='all'. Pass a keras_gradwatch.Measuring"),
    ],
)
def test_bad_arguments_are_rejected(tmp_path, kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        GradWatch(tmp_path, **kwargs)
    with pytest.raises(InvalidInputError, match="log_dir"):
        GradWatch(None)


# Plots, report, TensorBoard ------------------------------------------------------


def test_plots_and_report_are_drawn_at_the_end(tmp_path):
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data()
    # A budget that allows any drawing: drawn when training ends.
    fit(model, x, y, [GradWatch(tmp_path / "end", every=2, overhead=100.0)], epochs=1)
    names = {p.name for p in (tmp_path / "end").iterdir()}
    assert {"report.html", "decay_profile.png", "decay_heatmap.png", "gradient_norms.png"} <= names
    never = GradWatch(tmp_path / "none", plots=None)
    fit(model, x, y, [never], epochs=1)
    assert not list((tmp_path / "none").glob("*.png"))
    assert not never._engine.run.drawing.pending  # nothing left for the exit either
    drawn = []
    watch = GradWatch(tmp_path / "epoch", plots="epoch", overhead=100.0)
    original = watch._engine.finishing.draw
    watch._engine.finishing.draw = lambda: drawn.append(original())
    fit(model, x, y, [watch], epochs=3)
    assert len(drawn) == 4  # three epoch ends and the end of training
    with pytest.raises(InvalidInputError, match="plots='always'"):
        GradWatch(tmp_path, plots="always")


def test_a_drawing_left_for_the_exit_is_registered_once_and_taken_back_when_drawn(
        tmp_path, monkeypatch):
    calls = []

    class Hooks:  # atexit, recording what the drawing asks of it
        register = staticmethod(lambda function: calls.append(("register", function)))
        unregister = staticmethod(lambda function: calls.append(("unregister", function)))

    monkeypatch.setattr(_drawing, "atexit", Hooks)
    drawing = _drawing.ExitDrawing(tmp_path)
    drawing.defer()
    drawing.defer()  # deferred again: still one drawing at exit
    assert drawing.pending
    drawing.drawn()
    drawing.drawn()
    assert not drawing.pending
    assert calls == [("register", drawing.at_exit), ("unregister", drawing.at_exit)]


def test_drawing_stays_within_the_budget_and_happens_at_exit(tmp_path, monkeypatch):
    monkeypatch.setattr(_drawing, "_interactive", lambda: False)
    drawn = []
    original = _drawing.draw
    monkeypatch.setattr(_drawing, "draw", lambda log_dir: drawn.append(log_dir) or original(log_dir))
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data()
    watches = [GradWatch(tmp_path) for _ in range(4)]
    for watch in watches:  # fit(epochs=1) in a loop, a new callback each time
        fit(model, x, y, [watch], epochs=1)
    # Short fits: drawing (about a second) does not fit in 3 % of them.
    assert drawn == [] and not (tmp_path / "report.html").exists()
    assert all(watch._engine.run.drawing.pending for watch in watches)
    for watch in reversed(watches):  # what the end of the process does (atexit: last in, first out)
        watch._engine.run.drawing.at_exit()
    # Drawn once: the other callbacks find the report newer than the records.
    assert len(drawn) == 1 and (tmp_path / "report.html").exists()
    assert not any(watch._engine.run.drawing.pending for watch in watches)
    # A fit stopped by an alert draws at exit too: a second of drawing
    # would cost more than its few seconds of training.
    x[8:16] = np.nan
    catcher, caught = quiet()
    stopped = GradWatch(tmp_path / "stopped")
    try:
        fit(model, x, y, [stopped], epochs=1, shuffle=False)
    finally:
        catcher.__exit__(None, None, None)
    assert records.load_run(tmp_path / "stopped").summary["status"] == "stopped"
    assert not (tmp_path / "stopped" / "report.html").exists()
    stopped._engine.run.drawing.at_exit()
    assert (tmp_path / "stopped" / "report.html").exists()


def test_tensorboard_event_files(tmp_path):
    model = TruncatedBPTT(lstm_model(stateful=True, return_sequences=True), window=4)
    model.compile(optimizer="adam", loss="mse")
    x, _ = data()
    y = np.cumsum(x[..., :1], axis=1) / T
    watch = GradWatch(tmp_path, every=2, tensorboard=True)
    fit(model, x, y, [watch], epochs=1)
    watch._engine.run.drawing.at_exit()  # a short fit draws its plots at exit
    events = list(tmp_path.glob("events.out.tfevents.*"))
    assert events
    tags = set()
    for event in tf.data.TFRecordDataset([str(p) for p in events]):
        parsed = tf.compat.v1.Event.FromString(event.numpy())
        tags.update(value.tag for value in parsed.summary.value)
    for tag in ("train/loss", "train/grad_norm", "gradients/global_norm",
                "decay_rate/lstm", "horizon/lstm", "plots/decay_profile",
                "plots/gradient_norms"):
        assert tag in tags, (tag, tags)


# The measurement schedule --------------------------------------------------------


def test_the_budget_decides_how_often_a_short_run_is_measured(tmp_path):
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data(n=8 * 10)
    # At the default 3 %: the measurement before the first update always,
    # others only as the CPU time of training pays for them.
    fit(model, x, y, [GradWatch(tmp_path / "a")], epochs=3)
    few = records.load_run(tmp_path / "a").measurements
    assert few[0]["step"] == 0 and few[0]["reason"] == "start"
    # With room to spare (overhead=100: a hundred times the training's CPU
    # time): halfway through and at the end of every epoch, the log-spaced
    # steps first.
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    history = fit(model, x, y, [GradWatch(tmp_path / "b", overhead=100.0)], epochs=3)
    run = records.load_run(tmp_path / "b")
    reasons = {m["step"]: m["reason"] for m in run.measurements}
    for step, reason in ((0, "start"), (1, "early"), (2, "early"), (5, "mid-epoch"),
                         (15, "mid-epoch"), (25, "mid-epoch")):
        assert reasons.get(step) == reason, (step, reasons)
    assert {10, 20, 30} <= set(reasons)
    assert set(reasons.values()) <= {"start", "early", "mid-epoch", "epoch-end", "budget"}
    # The summary describes the measurement at the last step.
    last = run.measurements[-1]
    assert run.summary["layers"]["lstm"]["horizon"] == last["layers"]["lstm"]["horizon"]
    assert "horizon" not in history.history
    assert run.summary["measured_at_step"] == 30
    assert run.summary["measured_steps"] == len(reasons)
    assert len(few) < len(reasons)


def test_a_new_callback_on_a_continued_folder_inherits_nothing_from_the_process(tmp_path):
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data(n=8 * 4)
    first = GradWatch(tmp_path, overhead=100.0)
    fit(model, x, y, [first], epochs=1, shuffle=False)
    second = GradWatch(tmp_path, overhead=100.0)
    fit(model, x[::-1].copy(), y[::-1].copy(), [second], epochs=1, shuffle=False)
    # Its probe batch is its own first training batch, not the first callback's.
    np.testing.assert_array_equal(first._engine.measurer.probe[0], x[:B])
    np.testing.assert_array_equal(second._engine.measurer.probe[0], x[::-1][:B])
    # Its budget is its own, resumed from the folder's summary as a new
    # process would: the first fit's time in fit and one-off tracing.
    assert second._engine.run.budget is not first._engine.run.budget
    own = records.load_run(tmp_path).summary["own_time"]
    assert second._engine.run.budget.waived == max(own["one_off_cpu_seconds"], own["one_off_seconds"])
    assert second._engine.run.budget.elapsed() <= own["fit_cpu_seconds"]
    assert second._engine.run.budget.elapsed() > first._engine.run.budget.elapsed()


def test_repeated_fits_trace_once_and_keep_their_schedule(tmp_path):
    from keras_gradwatch import measurement

    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data(n=8 * 6)
    watches = [GradWatch(tmp_path, overhead=100.0) for _ in range(4)]
    for watch in watches:  # keras-io style: fit(epochs=1) in a loop
        fit(model, x, y, [watch], epochs=1)
    run = records.load_run(tmp_path)
    assert measurement._traces(model) == 1
    traced = [m["traced"] for m in run.measurements]
    assert traced[0] and not any(traced[1:])
    per_fit = [
        len([m for m in run.measurements if fit_["first_step"] < m["step"] <= fit_["first_step"] + 6])
        for fit_ in run.settings["fits"]
    ]
    assert min(per_fit) >= 2, per_fit
    # Each callback measures on its own probe batch, of the same size.
    assert {m["sequences"] for m in run.measurements} == {B}
    # The traced measurement's cost was waived, not charged: its CPU time,
    # or its wall time when that was longer (a busy machine).
    budget = watches[-1]._engine.run.budget  # resumed from the summary
    own = run.summary["own_time"]
    assert budget.waived == pytest.approx(
        max(own["one_off_cpu_seconds"], own["one_off_seconds"]), rel=1e-6)
    # The own time adds up over the four GradWatch instances (each resumes
    # the run's summary): every second the budget saw, charged or waived,
    # counted once. Light hooks are charged their thread's CPU (at most the
    # process's), heavy work max(CPU, wall): the total lies between half the
    # own CPU time and the own wall time (10 % for the last summary write of
    # each fit, an fsync, which comes after its figures are taken).
    assert 0.5 * own["cpu_seconds"] <= budget.spent + budget.waived <= 1.1 * own["seconds"]
    assert own["fit_cpu_seconds"] >= budget.elapsed()


# Alerts that are right -----------------------------------------------------------


class TwoLosses(keras.Model):
    """A custom train_step with two optimizers that logs `d_loss` and
    `g_loss` and no `loss` (as keras-io's GANs do)."""

    def __init__(self):
        super().__init__()
        self.first, self.second = keras.layers.Dense(1), keras.layers.Dense(1)
        self.optimizers = (keras.optimizers.Adam(1e-3), keras.optimizers.Adam(1e-3))
        self.trackers = (keras.metrics.Mean(name="d_loss"), keras.metrics.Mean(name="g_loss"))

    @property
    def metrics(self):
        return list(self.trackers)

    def call(self, x):
        return self.first(x)

    def train_step(self, data):
        x, y = data
        for layer, optimizer, tracker in zip((self.first, self.second), self.optimizers,
                                             self.trackers):
            with tf.GradientTape() as tape:
                loss = keras.ops.mean((layer(x) - y) ** 2)
            grads = tape.gradient(loss, layer.trainable_variables)
            optimizer.apply(grads, layer.trainable_variables)
            tracker.update_state(loss)
        return {tracker.name: tracker.result() for tracker in self.trackers}


def test_a_nan_in_a_logged_loss_other_than_loss_is_caught(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    x[40, 1] = np.nan  # the sixth batch
    model = TwoLosses()
    model.compile()
    watch = GradWatch(tmp_path, plots=None)
    catcher, _ = quiet()
    try:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False, callbacks=[watch])
    finally:
        catcher.__exit__(None, None, None)
    first = records.load_run(tmp_path).alerts[0]
    assert (first["kind"], first["step"]) == ("nonfinite", 6)
    assert first["message"].startswith("The logged 'd_loss', 'g_loss' are not finite at step 6")
    # The compiled optimizer made no update: neither it nor its rate is named.
    assert "the optimizers your train_step applies" in first["message"]
    assert "RMSprop" not in first["message"].replace("compiled keras.optimizers.RMSprop", "")
    run = records.load_run(tmp_path)
    assert all(s.get("lr") is None for s in run.steps[2:])
    # The losses were steady before: the data is named first.
    assert "Nothing grew before it" in first["message"]
    assert "Check the data first" in first["message"]


def test_a_model_without_call_says_why_it_is_not_measured(tmp_path):
    class NoCall(TwoLosses):  # as keras-io's Keras 3 VAE: train_step only
        call = keras.Model.call

    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 3)).astype("float32")
    model = NoCall()
    model.compile()
    catcher, _ = quiet()
    try:
        model.fit(x, x[:, :1], batch_size=8, epochs=1, verbose=0,
                  callbacks=[GradWatch(tmp_path, plots=None)])
    finally:
        catcher.__exit__(None, None, None)
    note = records.trend_note(records.summarize(records.load_run(tmp_path)))
    assert note.startswith("Not measured: the model cannot be called on the probe batch "
                           "(it has no call()")
    assert "logged losses are still checked" in note


def test_abrupt_blow_up_is_exploding_before_nonfinite(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12, 2)).astype("float32")
    y = x.sum(axis=1)[:, :1]
    model = keras.Sequential([
        keras.Input((None, 2)),
        layers.SimpleRNN(8, activation="relu", name="rnn"),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.SGD(3.0), loss="mse")
    # every=1: a measurement at step 2 whatever the time budget allows (the
    # default schedule's early ones depend on the machine's speed).
    watch = GradWatch(tmp_path, plots=None, every=1)
    catcher, caught = quiet()
    try:
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[watch])
    finally:
        catcher.__exit__(None, None, None)
    run = records.load_run(tmp_path)
    losses = [records.number(s["loss"]) for s in run.steps]
    # A normal loss, then about 1e17 after one update (NaN one step later).
    assert losses[0] < 100 and losses[1] > 1e10
    kinds = [a.kind for a in watch.alerts]
    assert kinds.index("exploding") < kinds.index("nonfinite")
    # The loss jump of step 2 waits for what follows (a hard batch leaps
    # too); the probe batch's gradient overflowing at the measurement of
    # step 2 is the evidence: exploding, then nonfinite, and training stops.
    assert [(a.kind, a.signal) for a in watch.alerts if a.step == 2][-2:] == [
        ("exploding", "layer_norm"), ("nonfinite", "layer_norm"),
    ]
    assert run.summary["status"] == "stopped"


def test_none_switches_a_kind_off(tmp_path):
    model = keras.Sequential(
        [keras.Input((None, F)), layers.SimpleRNN(8, name="tanh_rnn"), keras.layers.Dense(1)]
    )
    model.compile(optimizer="adam", loss="mse")
    x, y = data(t=120)
    y[10] = np.nan
    watch = GradWatch(tmp_path, every=1, alerting=Alerting(nonfinite=None, vanishing=None),
                      plots=None)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GradientWarning)
        fit(model, x, y, [watch], epochs=1, shuffle=False)
    assert watch.alerts == [] and not model.stop_training
    run = records.load_run(tmp_path)
    assert run.summary["alerts"] == {"nonfinite": 0, "exploding": 0, "vanishing": 0,
                                     "truncation": 0}
    assert run.settings["settings"]["actions"]["vanishing"] is None


def _abrupt_blow_up():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 12, 2)).astype("float32")
    model = keras.Sequential([
        keras.Input((None, 2)),
        layers.SimpleRNN(8, activation="relu", name="rnn"),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer=keras.optimizers.SGD(3.0), loss="mse")
    return model, x, x.sum(axis=1)[:, :1]


def test_warnings_point_at_the_fit_call(tmp_path):
    model, x, y = _abrupt_blow_up()
    with pytest.warns(GradientWarning) as caught:
        fit(model, x, y, [GradWatch(tmp_path, plots=None)], epochs=1)
    assert {pathlib.Path(w.filename).name for w in caught} == {"test_callback.py"}


def test_warnings_start_on_a_line_of_their_own_under_the_progress_bar(tmp_path, capsys):
    model, x, y = _abrupt_blow_up()
    with pytest.warns(GradientWarning):
        model.fit(x, y, batch_size=8, epochs=1, verbose=1,
                  callbacks=[GradWatch(tmp_path, plots=None)])
    out = capsys.readouterr().out
    # The bar is redrawn after a carriage return and ends its line only at
    # the epoch's end; the loss jump of step 2 ends the line of step 1's bar
    # before it is printed.
    first_bar = next(part for part in out.split("\r") if "1/8" in part)
    assert "\n" in first_bar, out


@pytest.mark.parametrize("steps_per_execution", [1, 2])
def test_step_loss_is_each_batch_own_loss_with_a_short_last_batch(tmp_path, steps_per_execution):
    # With a zero learning rate every step sees the same weights, so each
    # step's loss is the model's loss on that batch. The batches hold 8, 8
    # and 3 rows: Keras's running mean weights them by rows, so a step loss
    # taken from it as if all weighed alike is wrong for the last one.
    keras.utils.set_random_seed(0)
    model = lstm_model()
    model.compile(
        optimizer=keras.optimizers.SGD(0.0), loss="mse",
        steps_per_execution=steps_per_execution,
    )
    x, y = data(n=19)
    fit(model, x, y, [GradWatch(tmp_path, plots=None)], epochs=2, shuffle=False)
    losses = [s["loss"] for s in records.load_run(tmp_path).steps]
    mse = keras.losses.MeanSquaredError()
    per_batch = [float(mse(y[i : i + B], model(x[i : i + B]))) for i in (0, 8, 16)]
    if steps_per_execution == 2:  # one record per execution: its mean
        expected = [(8 * per_batch[0] + 8 * per_batch[1]) / 16, per_batch[2]]
    else:
        expected = per_batch
    np.testing.assert_allclose(losses, expected * 2, rtol=1e-5)


def test_run_of_a_newer_format_is_refused_not_overwritten(tmp_path):
    model = lstm_model()
    model.compile(optimizer="adam", loss="mse")
    x, y = data()
    fit(model, x, y, [GradWatch(tmp_path, plots=None)], epochs=1)
    settings = json.loads((tmp_path / "run.json").read_text())
    settings["format"] = records.FORMAT_VERSION + 1
    (tmp_path / "run.json").write_text(json.dumps(settings))
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()}
    with pytest.raises(RunFormatError, match="newer keras_gradwatch"):
        fit(model, x, y, [GradWatch(tmp_path, plots=None)], epochs=1)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    with pytest.raises(RunFormatError, match=f"format {records.FORMAT_VERSION + 1}"):
        records.load_run(tmp_path)


# Settings ---------------------------------------------------------------------


def _documented_args(cls):
    import re

    args = cls.__doc__.split("    Args:\n")[1].split("\n\n")[0]
    return re.findall(r"^        ([a-z_]+): ", args, re.M)


def test_the_settings_fields_are_the_keywords_the_docstring_and_run_json(tmp_path):
    import dataclasses
    import inspect

    from keras_gradwatch import AutoClip
    from keras_gradwatch.watch import _settings

    fields = dataclasses.fields(_settings.WatchSettings)
    parameters = list(inspect.signature(GradWatch).parameters.values())
    # The fields, then the former flat keywords (deprecated).
    assert parameters[-1].kind is inspect.Parameter.VAR_KEYWORD
    assert [p.name for p in parameters[:-1]] == [f.name for f in fields]
    for parameter, field in zip(parameters, fields):
        assert parameter.default == field.default or (
            parameter.default is inspect.Parameter.empty
            and field.default is dataclasses.MISSING), field.name
    assert _documented_args(GradWatch) == [f.name for f in fields]
    assert "{settings}" not in GradWatch.__doc__
    for group in (Measuring, Alerting, AutoClip):
        assert _documented_args(group) == [f.name for f in dataclasses.fields(group)]
        assert "{fields}" not in group.__doc__
    watch = GradWatch(tmp_path, every=2, measuring=Measuring(loss=len),
                      alerting=Alerting(actions={"truncation": None}))
    settings = _settings.WatchSettings(
        tmp_path, every=2, measuring=Measuring(loss=len),
        alerting=Alerting(actions={"truncation": None})).recorded()
    # run.json's settings stay flat, under the former keywords' names.
    assert list(settings) == [
        "every", "overhead", "loss", "loss_steps", "threshold", "tolerance", "actions",
        "spike_factor", "warmup", "max_grad_norm", "max_decay_rate", "vanishing_fraction",
        "vanishing_patience", "clip", "clip_percentile"]
    assert settings["loss"] == repr(len)
    assert settings["actions"]["truncation"] is None
    assert settings["actions"]["nonfinite"] == "stop"
    assert (settings["clip"], settings["clip_percentile"]) == (None, 90.0)
    assert watch.actions == {kind: settings["actions"][kind] for kind in settings["actions"]}
    assert (watch.every, watch.log_dir, watch.spike_factor) == (2, tmp_path, 10.0)
    assert watch.alerting == Alerting(actions={"truncation": None})
    assert watch.measuring.loss is len
