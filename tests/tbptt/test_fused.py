"""Tests of the fused LSTM recurrence (`tf.raw_ops.BlockLSTM`) and of
`TruncatedBPTT(recurrence=...)`.

The oracle is Keras's own `LSTM` on the same weights: its values and its
gradients (automatic differentiation of the cell), and, for the op's
registered gradient, central finite differences.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch import InvalidInputError
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import layers as probed_layers
from keras_gradwatch.core import _compat
from keras_gradwatch.tbptt import _fused

B, F, U = 3, 4, 5


def _values_and_gradients(layer, x, state, fused):
    """The layer's outputs on `x` from `state`, and the gradients of a
    weighted sum of them with respect to x, the state and the weights."""
    if fused:
        _compat.shadow_inner_loop(layer, _fused.fused_inner_loop(layer))
    try:
        with tf.GradientTape() as tape:
            tape.watch([x, *state])
            outputs = keras.tree.flatten(layer(x, initial_state=state))
            loss = sum(
                tf.reduce_sum(tf.cast(out, "float32") * np.cos(np.arange(out.shape[-1])))
                for out in outputs
            )
        grads = tape.gradient(loss, [x, *state, *layer.trainable_variables])
    finally:
        _compat.unshadow_inner_loop(layer)
    return [np.asarray(o, "float32") for o in outputs], [np.asarray(g) for g in grads]


def _random(*shape, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=shape).astype("float32"))


@pytest.fixture(params=["block", "stepwise"])
def gradient(request, monkeypatch):
    """Runs a test with each of the fused kernel's backward passes:
    `BlockLSTMGrad` and the step-by-step one (forced at every width)."""
    if request.param == "stepwise":
        monkeypatch.setattr(_fused, "STEPWISE_GRADIENT_MIN_UNITS", 1)
    return request.param


def test_block_lstm_gradient_agrees_with_finite_differences(gradient):
    layer = keras.layers.LSTM(3, return_sequences=True)
    x = _random(2, 5, 2)
    layer(x)
    kernel, recurrent, bias = (v.value for v in layer.trainable_variables)
    state = [tf.fill([2, 3], 0.3), tf.fill([2, 3], -0.2)]

    def loss(kernel, recurrent, bias, x):
        stand_in = _StandIn(kernel, recurrent, bias)
        outputs = _fused.run(stand_in, x, state, return_sequences=True)[1]
        return tf.reduce_sum(outputs * outputs)

    theoretical, numerical = tf.test.compute_gradient(
        loss, [kernel, recurrent, bias, x], delta=1e-2
    )
    for t, n in zip(theoretical, numerical):
        # Central differences of step 1e-2 in float32: error O(delta^2).
        assert np.max(np.abs(t - n)) <= 2e-3 * max(1.0, np.max(np.abs(n)))
        assert np.max(np.abs(n)) > 1e-2  # the check is not vacuous


class _StandIn:
    """A layer-like holder of given weight tensors, for `_fused.run`."""

    def __init__(self, kernel, recurrent, bias):
        self.cell = _StandInCell(kernel, recurrent, bias)
        self.go_backwards = False


class _StandInCell:
    def __init__(self, kernel, recurrent, bias):
        self.kernel, self.recurrent_kernel, self.bias = kernel, recurrent, bias
        self.use_bias, self.units = True, recurrent.shape[0]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"return_sequences": True},
        {"return_sequences": False},
        {"return_sequences": True, "go_backwards": True},
        {"return_sequences": False, "go_backwards": True},
        {"return_sequences": True, "use_bias": False},
        {"return_sequences": True, "unit_forget_bias": False},
    ],
)
@pytest.mark.parametrize("cls", [keras.layers.LSTM, probed_layers.LSTM])
def test_fused_equals_stock_values_and_gradients(cls, kwargs, gradient):
    layer = cls(U, return_state=True, **kwargs)
    x, state = _random(B, 7, F), [_random(B, U, seed=1), _random(B, U, seed=2)]
    layer(x, initial_state=state)
    if layer.cell.use_bias:  # a bias that tells the gates apart
        layer.cell.bias.assign(_random(4 * U, seed=3))
    stock = _values_and_gradients(layer, x, state, fused=False)
    fused = _values_and_gradients(layer, x, state, fused=True)
    for a, b in zip(stock[0] + stock[1], fused[0] + fused[1]):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)


def test_fused_runs_mixed_precision_as_the_stock_layer(gradient):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        layer = keras.layers.LSTM(U, return_sequences=True, return_state=True)
        x, state = _random(B, 6, F), [_random(B, U, seed=1), _random(B, U, seed=2)]
        layer(x, initial_state=state)
        stock = _values_and_gradients(layer, x, state, fused=False)
        fused = _values_and_gradients(layer, x, state, fused=True)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    for a, b in zip(stock[0] + stock[1], fused[0] + fused[1]):
        # float16 compute: round-off of about 1e-3 relative.
        np.testing.assert_allclose(a, b, atol=1e-2, rtol=1e-2)


@pytest.mark.parametrize(
    "layer,reason",
    [
        (keras.layers.GRU(U), "LSTM only"),
        (keras.layers.LSTM(U, activation="relu"), "activation=relu"),
        (keras.layers.LSTM(U, recurrent_activation="hard_sigmoid"), "recurrent_activation"),
        (keras.layers.LSTM(U, dropout=0.1), "dropout=0.1"),
        (keras.layers.LSTM(U, recurrent_dropout=0.1), "recurrent_dropout=0.1"),
        (keras.layers.LSTM(U, dtype="float64"), "float64"),
        (keras.layers.RNN(keras.layers.LSTMCell(U)), "RNN has no fused kernel"),
    ],
)
def test_layers_the_kernel_cannot_honour_are_refused(layer, reason):
    assert reason in _fused.unfused_reason(layer)
    assert _fused.planned_path(layer, "auto")[0] is False


def test_auto_fuses_small_and_wide_lstms_only():
    assert _fused.planned_path(keras.layers.LSTM(_fused.FUSED_MAX_UNITS), "auto") == (True, None)
    middle = keras.layers.LSTM(_fused.FUSED_MAX_UNITS + 1)
    assert _fused.planned_path(middle, "auto")[0] is False
    assert _fused.planned_path(middle, "fused") == (True, None)
    wide = keras.layers.LSTM(_fused.FUSED_MIN_WIDE_UNITS)
    assert _fused.planned_path(wide, "auto") == (True, None)
    assert _fused.planned_path(keras.layers.LSTM(_fused.FUSED_MIN_WIDE_UNITS - 1), "auto")[0] is False
    assert _fused.planned_path(keras.layers.LSTM(4), "stock")[0] is False


# TruncatedBPTT --------------------------------------------------------------


def _inner(stacked=False, return_sequences=True, masked=False, units=U):
    layers = [keras.Input(batch_shape=(B, None, F))]
    if masked:
        layers.append(keras.layers.Masking(0.0))
    layers.append(keras.layers.LSTM(units, stateful=True, return_sequences=stacked or return_sequences))
    if stacked:
        layers.append(probed_layers.LSTM(4, stateful=True, return_sequences=return_sequences))
    layers.append(keras.layers.Dense(1))
    return keras.Sequential(layers)


def _train(inner, recurrence, window, backprop=None, t=13, epochs=1):
    x = np.random.default_rng(0).normal(size=(2 * B, t, F)).astype("float32")
    y = np.cumsum(x[..., :1], axis=1) / 3.0
    if len(inner.compute_output_shape((B, t, F))) != 3:  # many-to-one
        y = y[:, -1]
    # The stock side rolled up: today's path without unrolling, the same
    # computation, traced faster.
    model = TruncatedBPTT(
        inner, window=window, backprop=backprop, recurrence=recurrence,
        unroll=recurrence != "stock",
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    history = model.fit(x, y, epochs=epochs, verbose=0, shuffle=False)
    return model, history.history["loss"]


@pytest.mark.parametrize(
    "case",
    [
        {"window": 4},
        {"window": 3, "backprop": 7},
        {"window": 4, "stacked": True},
        {"window": 4, "return_sequences": False, "backprop": 6},
    ],
)
def test_tbptt_training_fused_equals_stock(case):
    case = dict(case)
    window, backprop = case.pop("window"), case.pop("backprop", None)
    keras.utils.set_random_seed(1)
    stock_inner = _inner(**case)
    fused_inner = keras.models.clone_model(stock_inner)
    fused_inner.set_weights(stock_inner.get_weights())
    stock, stock_losses = _train(stock_inner, "stock", window, backprop)
    fused, fused_losses = _train(fused_inner, "fused", window, backprop)
    assert set(fused.recurrence_paths.values()) == {"fused"}
    # A fused span runs by its static length: a step per window.
    traced = f"traced for window {fused.window}: fused"
    assert all(traced in line for line in fused.recurrence_plan().values())
    assert "fused" not in stock.recurrence_paths.values()
    np.testing.assert_allclose(fused_losses, stock_losses, rtol=1e-5)
    for a, b in zip(stock_inner.get_weights(), fused_inner.get_weights()):
        np.testing.assert_allclose(a, b, atol=2e-6, rtol=1e-5)


def test_tbptt_training_with_the_stepwise_gradient_equals_stock(monkeypatch):
    monkeypatch.setattr(_fused, "STEPWISE_GRADIENT_MIN_UNITS", 1)
    test_tbptt_training_fused_equals_stock({"window": 3, "backprop": 7})


def test_a_mask_falls_back_to_the_stock_recurrence():
    keras.utils.set_random_seed(2)
    inner = _inner(masked=True)
    model, losses = _train(inner, "auto", window=4, epochs=1)
    assert model.recurrence_paths == {inner.layers[1].name: "unrolled"}
    assert inner.layers[1].name in model.recurrence_plan()
    assert np.isfinite(losses[0])


def test_plan_and_paths_are_shown():
    inner = _inner(units=_fused.FUSED_MAX_UNITS + 1)
    model = TruncatedBPTT(inner, window=4)
    plan = model.recurrence_plan()
    assert "97 units, between 96 and 256" in plan[inner.layers[0].name]
    model.compile(optimizer="sgd", loss="mse")
    assert model.recurrence_paths == {}
    x = np.zeros((B, 8, F), "float32")
    model.fit(x, x[..., :1], verbose=0)
    assert model.recurrence_paths == {inner.layers[0].name: "loop"}
    lines = []
    model.summary(print_fn=lines.append)
    # One traced step serves every window (the layer runs no static span).
    assert any("traced for every window: loop" in line for line in lines)
    assert "recurrence='auto'" in lines[-1]


def test_recurrence_survives_saving(tmp_path):
    model = TruncatedBPTT(_inner(), window=4, recurrence="stock")
    model.compile(optimizer="sgd", loss="mse")
    path = tmp_path / "model.keras"
    model.save(path)
    assert keras.saving.load_model(path).recurrence == "stock"


def test_bad_recurrence_is_refused():
    with pytest.raises(InvalidInputError, match="recurrence='fast'"):
        TruncatedBPTT(_inner(), window=4, recurrence="fast")
    gru = keras.Sequential(
        [keras.Input(batch_shape=(B, None, F)), keras.layers.GRU(U, stateful=True)]
    )
    with pytest.raises(InvalidInputError, match="LSTM only.*recurrence='auto'"):
        TruncatedBPTT(gru, window=4, recurrence="fused")


@pytest.mark.slow
def test_tbptt_training_fused_equals_stock_in_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(3)
        stock_inner = _inner()
        fused_inner = keras.models.clone_model(stock_inner)
        fused_inner.set_weights(stock_inner.get_weights())
        stock, _ = _train(stock_inner, "stock", 4)
        fused, _ = _train(fused_inner, "fused", 4)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert set(fused.recurrence_paths.values()) == {"fused"}
    for a, b in zip(stock_inner.get_weights(), fused_inner.get_weights()):
        # float16 activations: round-off of about 1e-3 per step.
        np.testing.assert_allclose(a, b, atol=5e-3, rtol=5e-3)
