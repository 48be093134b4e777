"""Tests of `keras_gradwatch.measure`, with exact oracles."""

import logging
import pathlib
import runpy

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch import InvalidInputError
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import layers
from keras_gradwatch import measure
from keras_gradwatch import measurement

ROOT = pathlib.Path(__file__).resolve().parents[2]
adding_problem = runpy.run_path(str(ROOT / "examples" / "adding_problem.py"))[
    "adding_problem"
]


def orthogonal(n, seed=0):
    q, r = np.linalg.qr(np.random.default_rng(seed).normal(size=(n, n)))
    return (q * np.sign(np.diag(r))).astype("float32")


def linear_rnn(
    rate, units=6, features=6, probed=True, return_sequences=False, steps=None
):
    """Linear SimpleRNN, recurrent kernel rate * Q: decays exactly as rate**k."""
    module = layers if probed else keras.layers
    rnn = module.SimpleRNN(
        units,
        activation=None,
        use_bias=False,
        return_sequences=return_sequences,
        name="rnn",
    )
    model = keras.Sequential([keras.Input((steps, features)), rnn])
    kernel = np.eye(features, units, dtype="float32")  # input grad = state grad
    rnn.set_weights([kernel, rate * orthogonal(units)])
    return model


def sequences(batch=3, steps=20, features=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, steps, features)).astype("float32")


@pytest.mark.parametrize("rate", [0.5, 0.9, 1.1])
@pytest.mark.parametrize("probed", [True, False])
def test_linear_rnn_profile_decays_exactly_as_rate_to_the_lag(rate, probed):
    x = sequences()
    y = np.ones((3, 6), "float32")
    result = measure(linear_rnn(rate, probed=probed), x, y, loss="mse")
    record = result.layers["rnn"]
    assert record.site == ("state" if probed else "input")
    lags = np.arange(20)
    expected = record.profile[0] * rate**lags
    np.testing.assert_allclose(record.profile, expected, rtol=1e-4)
    assert record.decay_rate == pytest.approx(rate, rel=0.01)


def test_last_step_loss_of_sequence_model_matches_many_to_one():
    x = sequences()
    y_seq = np.ones((3, 20, 6), "float32")
    seq = measure(linear_rnn(0.9, return_sequences=True), x, y_seq, loss="mse")
    last = measure(linear_rnn(0.9), x, y_seq[:, -1], loss="mse")
    np.testing.assert_allclose(
        seq.layers["rnn"].profile, last.layers["rnn"].profile, rtol=1e-5
    )
    full = measure(
        linear_rnn(0.9, return_sequences=True), x, y_seq, loss="mse",
        loss_steps="all",
    )
    # With a loss at every step, early steps gather gradient from all later
    # losses: the profile no longer decays as 0.9**lag.
    assert full.layers["rnn"].decay_rate > 0.95


@pytest.mark.parametrize("return_sequences", [False, True])
def test_model_built_for_a_fixed_length_is_measured(return_sequences):
    # keras.Input((20, 6)): the model accepts 20 steps only.
    x = sequences()
    y = np.ones((3, 20, 6) if return_sequences else (3, 6), "float32")
    fixed = linear_rnn(0.9, return_sequences=return_sequences, steps=20)
    record = measure(fixed, x, y, loss="mse").layers["rnn"]
    # The default loss is at the final step either way: exactly 0.9**lag.
    expected = record.profile[0] * 0.9 ** np.arange(20)
    np.testing.assert_allclose(record.profile, expected, rtol=1e-4)


def test_profile_without_targets_is_output_sensitivity():
    x = sequences()
    result = measure(linear_rnn(0.5), x)
    record = result.layers["rnn"]
    # L = sum of final outputs: dL/dh_T = ones, norm sqrt(units) at lag 0.
    assert record.profile[0] == pytest.approx(np.sqrt(6), rel=1e-5)
    assert record.decay_rate == pytest.approx(0.5, rel=1e-3)


@pytest.mark.slow  # trains an LSTM (10 s); the decay statistics have exact oracles above
def test_tanh_rnn_reaches_far_less_back_than_a_trained_lstm():
    # Trained on the adding problem (T=50), then probed on T=100 sequences:
    # the LSTM learns to keep its memory; the tanh SimpleRNN cannot.
    x, y = adding_problem(4096, 50)
    probe_x, probe_y = adding_problem(32, 100, seed=5)
    horizons = {}
    for kind in ("SimpleRNN", "LSTM"):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [
                keras.Input((None, 2)),
                getattr(layers, kind)(32, name=kind),
                keras.layers.Dense(1),
            ]
        )
        model.compile(keras.optimizers.Adam(1e-2), "mse")
        model.fit(x, y, epochs=10, batch_size=64, verbose=0)
        horizons[kind] = measure(model, probe_x, probe_y).layers[kind].horizon
    assert horizons["LSTM"] >= 3 * horizons["SimpleRNN"], horizons
    assert horizons["LSTM"] >= 60, horizons


def test_measure_changes_no_weights_no_state_no_metrics():
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(4, None, 2)),
            layers.GRU(5, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    model = TruncatedBPTT(inner, window=4)
    model.compile(optimizer="adam", loss="mse", metrics=["mae"])
    x = sequences(batch=4, features=2)
    y = np.cumsum(x[..., :1], axis=1)
    model.fit(x, y, epochs=1, verbose=0)
    weights = [w.copy() for w in model.get_weights()]
    state = inner.layers[0].states[0].numpy().copy()
    optimizer_state = [v.numpy().copy() for v in model.optimizer.variables]
    metrics = [v.numpy().copy() for v in model.metrics_variables]
    result = measure(model, x, y)
    assert result.window == 4 and result.length == 20
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    np.testing.assert_array_equal(state, inner.layers[0].states[0].numpy())
    for before, v in zip(optimizer_state, model.optimizer.variables):
        np.testing.assert_array_equal(before, v.numpy())
    for before, v in zip(metrics, model.metrics_variables):
        np.testing.assert_array_equal(before, v.numpy())


def test_truncated_model_is_measured_beyond_its_window_from_reset_state():
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(4, None, 2)),
            layers.LSTM(5, stateful=True),
            keras.layers.Dense(1),
        ]
    )
    model = TruncatedBPTT(inner, window=5, backprop=8)
    model.compile(optimizer="sgd", loss="mse")
    x = sequences(batch=6, steps=40, features=2)  # any batch size
    y = x[:, -1, :1]
    inner.layers[0].states[0].assign(np.ones((4, 5), "float32"))
    record = measure(model, x, y).layers[inner.layers[0].name]
    assert record.profile.shape == (40,)
    assert record.truncation_bias == pytest.approx(
        record.profile[8:].sum() / record.profile.sum()
    )
    # From a reset state, the same as a stateless twin on the same rows.
    twin = keras.Sequential(
        [keras.Input((None, 2)), layers.LSTM(5, name="twin"), keras.layers.Dense(1)]
    )
    twin.set_weights(inner.get_weights())
    expected = measure(twin, x, y, loss="mse").layers["twin"]
    np.testing.assert_allclose(record.profile, expected.profile, rtol=1e-5)
    np.testing.assert_array_equal(inner.layers[0].states[0].numpy(), 1.0)


def test_stock_layers_are_measured_at_their_input():
    inputs = keras.Input((None, 3))
    hidden = keras.layers.LSTM(4, return_sequences=True, name="first")(inputs)
    hidden = keras.layers.Bidirectional(
        keras.layers.GRU(3, return_sequences=True), name="both"
    )(hidden)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    model.compile(loss="mse")
    x = sequences(features=3)
    result = measure(model, x, np.zeros((3, 20, 1), "float32"))
    assert list(result.layers) == ["first", "both"]
    assert {r.site for r in result.layers.values()} == {"input"}
    # The layers run unpatched again afterwards.
    assert "call" not in vars(model.get_layer("first"))
    assert all(np.isfinite(r.profile).all() for r in result.layers.values())


def test_subclassed_model_with_probe_layer_and_stock_layer():
    class Tagger(keras.Model):
        def __init__(self):
            super().__init__()
            self.embed = keras.layers.Embedding(12, 4)
            self.mark = layers.Probe(name="mark")
            self.rnn = keras.layers.GRU(5, return_sequences=True, name="gru")
            self.out = keras.layers.Dense(12)

        def call(self, tokens):
            return self.out(self.rnn(self.mark(self.embed(tokens))))

    model = Tagger()
    tokens = np.random.default_rng(0).integers(0, 12, size=(3, 15))
    model(tokens)
    result = measure(
        model,
        tokens,
        np.roll(tokens, -1, axis=1),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    assert set(result.layers) == {"mark", "gru"}
    np.testing.assert_allclose(
        result.layers["mark"].profile, result.layers["gru"].profile, rtol=1e-5
    )


def test_boolean_inputs_are_measured_at_the_first_float_tensor():
    model = keras.Sequential(
        [keras.Input((None, 4), dtype="bool"), keras.layers.SimpleRNN(3, name="rnn")]
    )
    x = np.random.default_rng(0).random((2, 10, 4)) > 0.5
    record = measure(model, x).layers["rnn"]
    assert record.profile.shape == (10,)
    assert record.profile[0] > 0


def test_nothing_to_measure_says_why():
    model = keras.Sequential([keras.Input((None, 3)), keras.layers.Dense(2)])
    with pytest.raises(InvalidInputError, match="nothing to probe.*Probe"):
        measure(model, sequences(features=3))


def test_bad_arguments_are_rejected():
    model = linear_rnn(0.5)
    with pytest.raises(InvalidInputError, match="loss_steps='first'"):
        measure(model, sequences(), loss_steps="first")
    with pytest.raises(InvalidInputError, match="no loss"):
        measure(model, sequences(), np.ones((3, 6), "float32"))
    with pytest.raises(InvalidInputError, match=r"\(batch, time"):
        measure(model, np.ones((3,), "float32"))


def test_repeated_measurements_reuse_one_trace():
    model = linear_rnn(0.7)
    x, y = sequences(), np.ones((3, 6), "float32")
    first = measure(model, x, y, loss="mse")
    second = measure(model, x + 1.0, y, loss="mse")
    assert measurement._traces(model) == 1
    assert not np.allclose(first.layers["rnn"].profile, second.layers["rnn"].profile)


def test_summary_lists_each_layer():
    result = measure(linear_rnn(0.5), sequences(), backprop=4)
    text = result.summary()
    assert "rnn" in text and "bias@4" in text


def test_the_former_window_keyword_warns_and_still_works():
    model, x = linear_rnn(0.5), sequences()
    with pytest.warns(DeprecationWarning, match=r"measure\(window=4\) is deprecated: pass backprop=4"):
        old = measure(model, x, window=4)
    new = measure(model, x, backprop=4)
    assert old.window == new.window == 4
    assert old.layers["rnn"].truncation_bias == new.layers["rnn"].truncation_bias
    # The bias is measured against that span: the profile's mass at lags >= 4.
    profile = new.layers["rnn"].profile
    assert new.layers["rnn"].truncation_bias == pytest.approx(profile[4:].sum() / profile.sum())
    with pytest.raises(InvalidInputError, match="pass `backprop` only"):
        measure(model, x, backprop=4, window=4)


@pytest.mark.parametrize(
    "per_step, loss_steps",
    # Per-step outputs with the profile of the last step: two backward
    # passes. Many-to-one, or loss_steps="all": one pass serves both.
    [(True, "last"), (False, "last"), (True, "all")],
)
def test_gradient_norms_match_the_training_loss_gradient(per_step, loss_steps):
    model = keras.Sequential(
        [
            keras.Input((None, 2)),
            layers.GRU(4, return_sequences=per_step, name="gru"),
            keras.layers.Dense(1, name="head"),
        ]
    )
    x = sequences(features=2)
    y = np.cumsum(x[..., :1], axis=1)
    if not per_step:
        y = y[:, -1]
    result = measure(model, x, y, loss="mse", gradient_norms=True, loss_steps=loss_steps)
    with tf.GradientTape() as tape:
        loss = keras.losses.MeanSquaredError()(y, model(x))
    grads = tape.gradient(loss, model.trainable_variables)
    gru = tf.linalg.global_norm(grads[:3]).numpy()
    head = tf.linalg.global_norm(grads[3:]).numpy()
    assert result.layer_norms == pytest.approx({"gru": gru, "head": head}, rel=1e-5)
    assert result.global_norm == pytest.approx(np.hypot(gru, head), rel=1e-5)
    assert measure(model, x, y, loss="mse").global_norm is None


def test_measurement_without_targets_then_with_targets_uses_the_loss():
    # The cached measurer of a measurement without y (no loss) must not
    # serve one with y: its loss would be ignored.
    # (The stand-in of a model with no loss: an uncompiled model, no targets.)
    model = linear_rnn(0.5)
    x = sequences()
    without = measure(model, x)
    y = np.zeros((3, 6), "float32")
    with_targets = measure(model, x, y, loss="mse")
    # Each sequence's loss mean((h_T - 0)^2) over units: its gradient is
    # 2 h_T / units, not the ones of the output sum.
    outputs = model(x).numpy()
    expected = np.linalg.norm(2 * outputs / outputs.shape[-1], axis=-1).mean()
    assert with_targets.layers["rnn"].profile[0] == pytest.approx(expected, rel=1e-4)
    assert without.layers["rnn"].profile[0] == pytest.approx(np.sqrt(6), rel=1e-5)


def test_models_measured_in_a_loop_raise_no_retracing_warning():
    # Each model's measurement traces once; TensorFlow would count the
    # traces of all of them together and warn of "retracing" from the 5th.
    messages = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Collect()
    logger = logging.getLogger("tensorflow")
    logger.addHandler(handler)
    try:
        x = np.random.default_rng(0).normal(size=(4, 6, 2)).astype("float32")
        for _ in range(7):
            model = keras.Sequential([keras.Input((6, 2)), layers.SimpleRNN(3), keras.layers.Dense(1)])
            model.compile(optimizer="sgd", loss="mse")
            measure(model, x, x[:, -1, :1])
    finally:
        logger.removeHandler(handler)
    assert not [m for m in messages if "retracing" in m]
