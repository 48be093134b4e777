"""Tests of `keras_gradwatch.layers`: drop-in equality with Keras layers."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import layers
from keras_gradwatch.core import _probing

KINDS = ["SimpleRNN", "GRU", "LSTM"]


def pair(kind, **kwargs):
    """A stock layer and ours with the same config and weights."""
    stock = getattr(keras.layers, kind)(4, **kwargs)
    ours = getattr(layers, kind)(4, **kwargs)
    return stock, ours


def sequences(batch=3, steps=7, features=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(batch, steps, features)).astype("float32")


def matched(stock, ours, shape):
    """Builds both layers (or models) and gives ours the stock weights."""
    stock.build(shape)
    ours.build(shape)
    ours.set_weights(stock.get_weights())
    return stock, ours


def probed_call(layer, x, **kwargs):
    """Calls `layer` inside a probing session; returns outputs and probes."""
    with tf.GradientTape() as tape, _probing.session(tape) as session:
        outputs = layer(x, **kwargs)
    return outputs, session.sites


def assert_same(a, b):
    for u, v in zip(keras.tree.flatten(a), keras.tree.flatten(b)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-6)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"return_sequences": True},
        {"return_state": True},
        {"go_backwards": True, "return_sequences": True},
        {"activation": "relu", "use_bias": False},
        {"unroll": True, "return_sequences": True},
    ],
)
def test_outputs_equal_the_stock_layer(kind, options):
    x = sequences()
    stock, ours = matched(*pair(kind, **options), x.shape)
    expected = stock(x)
    assert_same(ours(x), expected)
    probed, sites = probed_call(ours, x)
    assert_same(probed, expected)  # a zero probe changes nothing
    assert [site.kind for site in sites] == ["state"]


def test_generic_rnn_wraps_any_cell():
    x = sequences()
    stock, ours = matched(
        keras.layers.RNN(keras.layers.GRUCell(4), return_sequences=True),
        layers.RNN(keras.layers.GRUCell(4), return_sequences=True),
        x.shape,
    )
    assert_same(ours(x), stock(x))
    assert_same(probed_call(ours, x)[0], stock(x))


@pytest.mark.parametrize("kind", KINDS)
def test_masked_steps_are_skipped_as_in_keras(kind):
    x = sequences()
    x[:, 5:] = 0.0
    model_stock, model_ours = matched(
        *(
            keras.Sequential(
                [keras.layers.Masking(0.0), getattr(module, kind)(4, return_sequences=True)]
            )
            for module in (keras.layers, layers)
        ),
        x.shape,
    )
    assert_same(model_ours(x), model_stock(x))
    assert_same(probed_call(model_ours, x)[0], model_stock(x))


@pytest.mark.parametrize("kind", KINDS)
def test_stateful_layer_carries_state_like_keras(kind):
    x = sequences(batch=2)
    stock, ours = matched(*pair(kind, stateful=True, return_sequences=True), x.shape)
    for part in (x[:, :3], x[:, 3:]):
        assert_same(ours(part), stock(part))
    ours.reset_state()
    assert np.abs(keras.tree.flatten(ours.states)[0].numpy()).max() == 0.0


def test_probe_gradient_is_total_state_derivative():
    # h_t = h_{t-1} U + x_t W (linear): dL/dh_t = dL/dh_T (U^T)^(T-t).
    x = sequences(batch=1, steps=5)
    layer = layers.SimpleRNN(4, activation=None, use_bias=False)
    layer.build(x.shape)
    with tf.GradientTape() as tape:
        with _probing.session(tape) as session:
            out = layer(x)
        loss = tf.reduce_sum(out * tf.constant([[1.0, -2.0, 0.5, 3.0]]))
    grad = tape.gradient(loss, session.sites[0].probe).numpy()[0]
    recurrent = layer.cell.recurrent_kernel.numpy()
    expected = np.array([1.0, -2.0, 0.5, 3.0])
    for t in range(4, -1, -1):
        np.testing.assert_allclose(grad[t], expected, rtol=1e-5, atol=1e-6)
        expected = expected @ recurrent.T


def test_probe_layer_is_identity_and_marks_a_site():
    x = sequences()
    probe = layers.Probe(name="here")
    np.testing.assert_array_equal(probe(x).numpy(), x)
    out, sites = probed_call(probe, x)
    np.testing.assert_array_equal(out.numpy(), x)
    assert [(s.name, s.kind) for s in sites] == [("here", "probe")]


@pytest.mark.parametrize("kind", KINDS + ["custom"])
def test_keras_file_round_trip(tmp_path, kind):
    rnn = (
        layers.RNN(keras.layers.SimpleRNNCell(3), return_sequences=True)
        if kind == "custom"
        else getattr(layers, kind)(3, return_sequences=True)
    )
    model = keras.Sequential(
        [keras.Input((None, 2)), layers.Probe(), rnn, keras.layers.Dense(1)]
    )
    x = sequences()
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert type(loaded.layers[1]) is type(rnn)
    assert isinstance(loaded.layers[0], layers.Probe)
    np.testing.assert_allclose(loaded(x).numpy(), model(x).numpy(), atol=1e-6)


def test_trains_under_truncated_bptt_like_the_stock_layer():
    x = sequences(batch=4, steps=10)
    y = np.cumsum(x[..., :1], axis=1)
    models = []
    for module in (keras.layers, layers):
        inner = keras.Sequential(
            [
                keras.Input(batch_shape=(4, None, 2)),
                module.LSTM(4, stateful=True, return_sequences=True),
                keras.layers.Dense(1),
            ]
        )
        models.append(inner)
    models[1].set_weights(models[0].get_weights())
    for inner in models:
        wrapper = TruncatedBPTT(inner, window=3)
        wrapper.compile(optimizer=keras.optimizers.SGD(0.3), loss="mse")
        wrapper.fit(x, y, epochs=2, verbose=0)
    for a, b in zip(models[0].get_weights(), models[1].get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bidirectional_around_probed_layers():
    x = sequences()
    stock, layer = matched(
        keras.layers.Bidirectional(keras.layers.GRU(3, return_sequences=True)),
        keras.layers.Bidirectional(layers.GRU(3, return_sequences=True)),
        x.shape,
    )
    out, sites = probed_call(layer, x)
    assert_same(out, stock(x))
    assert len(sites) == 2 and {s.kind for s in sites} == {"state"}


@pytest.mark.parametrize("imports", ["keras_gradwatch, keras", "keras, keras_gradwatch"])
def test_importing_the_package_registers_its_layers(tmp_path, imports):
    import subprocess
    import sys

    model = keras.Sequential([keras.Input((None, 2)), layers.LSTM(3)])
    path = tmp_path / "model.keras"
    model.save(path)
    code = (
        f"import {imports}; "
        f"layer = keras.models.load_model({str(path)!r}).layers[0]; "
        "from keras_gradwatch import layers; "
        "print(type(layer).__module__, type(layer) is layers.LSTM)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "keras_gradwatch.core.layers True", done.stderr[-2000:]
