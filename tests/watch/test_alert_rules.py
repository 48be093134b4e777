"""GradWatch's alert rules on small real fits: healthy runs of the patterns
that raised false alarms give none; real failures give the alert."""

import warnings

import keras
import numpy as np
import pytest

from keras_gradwatch import Alerting
from keras_gradwatch import GradWatch
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import layers
from keras_gradwatch import records


def _fit(model, x, y, tmp_path, **kwargs):
    """Fits with a GradWatch whose alerts are collected, not printed. It
    may take 100x the training's CPU time (`overhead=100`): every step the
    schedule prefers is measured, whatever the machine's speed."""
    seen = []
    alerting = Alerting(nonfinite=seen.append, exploding=seen.append, vanishing=seen.append,
                        actions={"truncation": seen.append})
    watch = GradWatch(tmp_path, plots=None, overhead=100.0, alerting=alerting)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, verbose=0, callbacks=[watch], **kwargs)
    return watch, history, seen


def test_padded_text_encoder_is_no_alert(tmp_path):
    # Sentences padded with a space token at the end, no mask, median length
    # 18 of 27; an encoder LSTM learns whether a token occurs: its input
    # gradient is small over the padding, large over the sentence.
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.normal(18, 5, size=384).round().astype(int), 4, 27)
    tokens = np.zeros((384, 27), int)  # 0: the space
    for row, length in enumerate(lengths):
        tokens[row, :length] = rng.integers(1, 30, size=length)
    y = (tokens == 1).any(axis=1, keepdims=True).astype("float32")
    model = keras.Sequential([keras.Input((27,)), keras.layers.Embedding(30, 8),
                              keras.layers.LSTM(16, name="encoder"),
                              keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="binary_crossentropy")
    watch, history, seen = _fit(model, tokens, y, tmp_path, epochs=6, batch_size=32,
                                validation_split=0.2)
    assert history.history["val_loss"][-1] < 0.3 * history.history["val_loss"][0]
    assert seen == []


def test_plateau_exit_is_no_exploding(tmp_path):
    # An LSTM text classifier whose cue sits in the first 10 of 30 steps: the
    # loss sits at 0.693, then leaves it; the norm and the input gradient's
    # rise going back grow as it learns (this run used to raise 4 exploding
    # alerts "grows going back in time ... rises 15-90x").
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x = rng.integers(2, 10, size=(256, 30))
    y = rng.integers(0, 2, size=(256, 1)).astype("float32")
    cue = rng.integers(0, 10, size=256)
    x[np.flatnonzero(y[:, 0] == 1), cue[y[:, 0] == 1]] = 1
    model = keras.Sequential([keras.Input((30,)), keras.layers.Embedding(10, 8),
                              keras.layers.LSTM(16), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="binary_crossentropy")
    _, history, seen = _fit(model, x, y, tmp_path, epochs=10, batch_size=16)
    losses = history.history["loss"]
    assert losses[0] > 0.68 and losses[-1] < 0.1
    assert [a for a in seen if a.kind == "exploding"] == []


def test_unshuffled_forecasting_is_no_vanishing(tmp_path):
    # A forecasting LSTM on time-ordered windows of a series whose level
    # drifts, not shuffled: consecutive stretches of an epoch differ in loss
    # by the data. The loss falls epoch over epoch: no vanishing.
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    t = np.arange(2400)
    series = (np.sin(t / 15) * (1 + 0.8 * np.sin(t / 400)) + 0.1 * rng.normal(size=2400))
    starts = range(0, 2400 - 101, 3)
    x = np.stack([series[i:i + 100] for i in starts])[..., None].astype("float32")
    y = np.array([series[i + 100] for i in starts])[:, None].astype("float32")
    model = keras.Sequential([keras.Input((100, 1)), keras.layers.LSTM(16, name="lstm"),
                              keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    cut = int(0.8 * len(x))
    watch, history, seen = _fit(model, x[:cut], y[:cut], tmp_path, epochs=3, batch_size=16,
                                shuffle=False, validation_data=(x[cut:], y[cut:]))
    run = records.load_run(tmp_path)
    far = [m for m in run.measurements if m["step"] > 0]
    # Its gradient does fade within the window (what the rule measures) ...
    assert min(run.profiles(m)["lstm"][-1] / run.profiles(m)["lstm"][0] for m in far) < 1e-3
    # ... but the validation loss falls.
    assert history.history["val_loss"][-1] < history.history["val_loss"][0]
    assert [a for a in seen if a.kind == "vanishing"] == []


@pytest.mark.parametrize("package_layer", [True, False])
def test_diverging_relu_rnn_is_exploding(tmp_path, package_layer):
    # Large recurrent weights (orthogonal, gain 3) and ReLU: the recurrence
    # amplifies. The package's layer shows it in the state gradient before
    # the first update; at a stock layer's input, that alone is no verdict,
    # and the first update's blow-up is.
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x = rng.uniform(size=(64, 40, 2)).astype("float32")
    rnn = (layers.SimpleRNN if package_layer else keras.layers.SimpleRNN)(
        16, activation="relu", recurrent_initializer=keras.initializers.Orthogonal(gain=3.0),
        name="relu_rnn")
    model = keras.Sequential([keras.Input((None, 2)), rnn, keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(1e-4), loss="mse")
    _, _, seen = _fit(model, x, x.sum(axis=1)[:, :1], tmp_path, epochs=1, batch_size=16)
    exploding = [a for a in seen if a.kind == "exploding"]
    assert exploding
    if package_layer:
        assert (exploding[0].step, exploding[0].signal) == (0, "profile")
        assert "state gradient" in exploding[0].message
    else:
        assert exploding[0].step == 1
        assert "profile" not in {a.signal for a in exploding}


def _linear_stream_model(units=4):
    """A linear stateful RNN whose gradient decays as 0.99**lag."""
    return keras.Sequential([
        keras.Input(batch_shape=(4, None, 1)),
        keras.layers.SimpleRNN(units, activation="linear", stateful=True,
                               return_sequences=True, kernel_initializer="ones",
                               recurrent_initializer=keras.initializers.Identity(gain=0.99),
                               use_bias=False),
        keras.layers.Dense(1, kernel_initializer="ones", use_bias=False),
    ])


@pytest.mark.parametrize("window, expected", [(8, ["truncation"] * 2), (128, [])])
def test_truncation_is_said_when_the_window_cuts_most_of_the_gradient(
        tmp_path, window, expected):
    # No learning (learning rate 0): the validation loss stalls, and the
    # profile decays exactly as 0.99**lag over 128 steps: a window of 8 cuts
    # off (0.99**8 - 0.99**128) / (1 - 0.99**128) = 85 % of it.
    keras.utils.set_random_seed(0)
    model = TruncatedBPTT(_linear_stream_model(), window=window)
    model.compile(optimizer=keras.optimizers.SGD(0.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(8, 128, 1)).astype("float32")
    _, _, seen = _fit(model, x, x, tmp_path, epochs=3, batch_size=4,
                      validation_data=(x[:4], x[:4]))
    assert [a.kind for a in seen] == expected
    if expected:
        alert = seen[0]
        bias = (0.99**8 - 0.99**128) / (1 - 0.99**128)
        assert alert.value == pytest.approx(bias, rel=1e-3) and alert.threshold == 0.5
        # At the end of epochs 1 and 2: the first that can say the loss stalls.
        assert [a.epoch for a in seen] == [1, 2]
        assert f"backprop=8 cuts off {bias:.0%}" in alert.message
        written = records.load_run(tmp_path).alerts[0]["evidence"]
        assert written["backprop"] == 8 and written["trend"]["stalled"] is True
        assert written["bias"] == pytest.approx(bias, rel=1e-3)
        assert "the validation loss has not fallen" in alert.message


@pytest.mark.slow
def test_plateau_exit_with_norm_spikes_is_no_exploding(tmp_path):
    # The pattern at full size: after the plateau the norm jumps to
    # 20-90x the 90th percentile of its last 100 steps, several times, while
    # the loss falls from 0.693 to 0.03.
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    x = rng.integers(2, 10, size=(512, 40))
    y = rng.integers(0, 2, size=(512, 1))
    cue = rng.integers(0, 10, size=512)
    x[np.flatnonzero(y[:, 0] == 1), cue[y[:, 0] == 1]] = 1
    model = keras.Sequential([keras.Input((40,)), keras.layers.Embedding(10, 8),
                              keras.layers.LSTM(16), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
    _, history, seen = _fit(model, x, y.astype("float32"), tmp_path, epochs=20, batch_size=32,
                            validation_split=0.2)
    norms = [s["grad_norm"] for s in records.load_run(tmp_path).steps]
    leaps = [t for t in range(5, len(norms))
             if norms[t] > 10 * np.quantile(norms[max(0, t - 100):t], 0.9)]
    assert leaps and history.history["loss"][-1] < 0.1
    assert [a for a in seen if a.kind == "exploding"] == []
