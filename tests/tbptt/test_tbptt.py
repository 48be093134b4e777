"""Tests of `keras_gradwatch.TruncatedBPTT`.

The reference implementations below are written independently of the
package: a non-stateful twin of the recurrent layer takes its initial state
explicitly, `tf.stop_gradient` cuts it at every window edge, and plain SGD
applies one update per window.
"""

import math
import re

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import refused_before_any_step

from keras_gradwatch import InvalidInputError
from keras_gradwatch import TruncatedBPTT

B, F = 4, 3
LR = 0.5


@keras.saving.register_keras_serializable(package="keras_gradwatch_tests")
class MinimalRNNCell(keras.layers.Layer):
    """The custom cell of the Keras RNN guide: h = tanh(x W + h U)."""

    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        self.units = units
        self.state_size = units

    def build(self, input_shape):
        self.kernel = self.add_weight(
            shape=(input_shape[-1], self.units), name="kernel"
        )
        self.recurrent_kernel = self.add_weight(
            shape=(self.units, self.units), name="recurrent_kernel"
        )

    def call(self, inputs, states):
        h = keras.ops.tanh(
            keras.ops.matmul(inputs, self.kernel)
            + keras.ops.matmul(states[0], self.recurrent_kernel)
        )
        return h, [h]

    def get_config(self):
        return {**super().get_config(), "units": self.units}


def make_rnn(kind, units=5, **kwargs):
    if kind == "custom":
        return keras.layers.RNN(MinimalRNNCell(units), **kwargs)
    return getattr(keras.layers, kind)(units, **kwargs)


def make_inner(kind="LSTM", return_sequences=True, batch=B, features=F):
    return keras.Sequential(
        [
            keras.Input(batch_shape=(batch, None, features)),
            make_rnn(kind, stateful=True, return_sequences=return_sequences),
            keras.layers.Dense(1),
        ]
    )


def data(n=B, t=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, t, F)).astype("float32")
    y = np.cumsum(x[..., :1], axis=1).astype("float32") / 3.0
    return x, y


class Reference:
    """Windowed training of a non-stateful twin with explicit state."""

    def __init__(self, inner):
        rnn, dense = inner.layers
        config = {**rnn.get_config(), "stateful": False, "return_state": True}
        self.rnn = rnn.__class__.from_config(config)
        self.dense = dense.__class__.from_config(dense.get_config())
        self.return_sequences = rnn.return_sequences
        self.rnn.build((None, None, F))
        self.dense.build((None, rnn.units if hasattr(rnn, "units") else 5))
        self.rnn.set_weights(rnn.get_weights())
        self.dense.set_weights(dense.get_weights())
        self.variables = self.rnn.trainable_variables + self.dense.trainable_variables
        self.loss = keras.losses.MeanSquaredError()

    def zero_state(self, rows):
        sizes = self.rnn.cell.state_size
        sizes = sizes if isinstance(sizes, (list, tuple)) else [sizes]
        return [tf.zeros((rows, s)) for s in sizes]

    def run(self, x, state):
        out, *state = self.rnn(x, initial_state=state)
        return out, state

    def weights(self):
        return [v.numpy() for v in self.variables]

    def train_batch(self, x, y, window, backprop, state=None, carry=True):
        """One batch of TBPTT(window, backprop); returns the final state.

        With `carry=False` every window starts from a zero state instead.
        """
        x, y = tf.constant(x), tf.constant(y)
        rows, length = x.shape[0], x.shape[1]
        count = math.ceil(length / window)
        overlap = backprop - window
        saved = {0: state if state is not None else self.zero_state(rows)}
        windows = range(count) if self.return_sequences else [count - 1]
        if not self.return_sequences:
            start = max(0, (count - 1) * window - overlap)
            if start:
                _, saved[start] = self.run(x[:, :start], saved[0])
        for i in windows:
            begin, end = i * window, min((i + 1) * window, length)
            start = max(0, begin - overlap)
            next_start = max(0, end - overlap)
            state = saved[start] if carry else self.zero_state(rows)
            state = [tf.stop_gradient(s) for s in state]
            with tf.GradientTape() as tape:
                if start < next_start < end and i + 1 < count:
                    out1, mid = self.run(x[:, start:next_start], state)
                    saved[next_start] = [tf.stop_gradient(s) for s in mid]
                    out2, final = self.run(x[:, next_start:end], mid)
                    out = tf.concat([out1, out2], axis=1)
                else:
                    out, final = self.run(x[:, start:end], state)
                pred = self.dense(out)
                if self.return_sequences:
                    loss = self.loss(y[:, begin:end], pred[:, begin - start :])
                else:
                    loss = self.loss(y, pred)
            grads = tape.gradient(loss, self.variables)
            for variable, grad in zip(self.variables, grads):
                variable.assign_sub(LR * grad)
            saved[end] = [tf.stop_gradient(s) for s in final]
        return saved[length]


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def compiled(model, **kwargs):
    model.compile(optimizer=keras.optimizers.SGD(LR), loss="mse", **kwargs)
    return model


# Equivalence with reference training ---------------------------------------


def test_window_covering_sequence_equals_full_bptt():
    x, y = data(t=10)
    inner = make_inner()
    plain = keras.models.clone_model(inner)
    plain.set_weights(inner.get_weights())
    compiled(plain)
    plain.train_on_batch(x, y)
    model = compiled(TruncatedBPTT(inner, window=16))
    model.fit(x, y, epochs=1, verbose=0)
    assert max_diff(inner.get_weights(), plain.get_weights()) <= 1e-5


@pytest.mark.parametrize("unroll", ["auto", False])
@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM", "custom"])
def test_windows_equal_stop_gradient_reference(kind, unroll):
    x, y = data(t=11)
    inner = make_inner(kind)
    reference = Reference(inner)
    reference.train_batch(x, y, window=4, backprop=4)
    model = compiled(TruncatedBPTT(inner, window=4, unroll=unroll))
    model.fit(x, y, epochs=1, verbose=0)
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5
    assert model.optimizer.iterations.numpy() == 3  # 4 + 4 + 3 steps


def test_reference_tells_carried_state_and_span_apart():
    # Guards the tests above: a state that is not carried, or a span of the
    # wrong length, lands far outside their tolerance.
    x, y = data(t=11)
    inner = make_inner()
    carried, restarted, longer = Reference(inner), Reference(inner), Reference(inner)
    carried.train_batch(x, y, window=4, backprop=4)
    restarted.train_batch(x, y, window=4, backprop=4, carry=False)
    longer.train_batch(x, y, window=4, backprop=6)
    assert max_diff(carried.weights(), restarted.weights()) > 1e-3
    assert max_diff(carried.weights(), longer.weights()) > 1e-3


@pytest.mark.parametrize("unroll", ["auto", False])
@pytest.mark.parametrize("window,backprop", [(3, 5), (3, 7), (4, 6), (1, 6)])
def test_backprop_longer_than_window_equals_reference(window, backprop, unroll):
    x, y = data(t=13)
    inner = make_inner("GRU")
    reference = Reference(inner)
    reference.train_batch(x, y, window=window, backprop=backprop)
    model = compiled(
        TruncatedBPTT(inner, window=window, backprop=backprop, unroll=unroll)
    )
    model.fit(x, y, epochs=1, verbose=0)
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5


@pytest.mark.parametrize("unroll", ["auto", False])
@pytest.mark.parametrize("backprop", [4, 6])
def test_many_to_one_trains_on_final_window_only(backprop, unroll):
    x, y = data(t=11)
    y = y[:, -1]
    inner = make_inner("LSTM", return_sequences=False)
    reference = Reference(inner)
    reference.train_batch(x, y, window=4, backprop=backprop)
    model = compiled(
        TruncatedBPTT(inner, window=4, backprop=backprop, unroll=unroll)
    )
    model.fit(x, y, epochs=1, verbose=0)
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5
    assert model.optimizer.iterations.numpy() == 1


@pytest.mark.parametrize("unroll", ["auto", False])
def test_partial_last_batch_and_window_are_trained(unroll):
    # 6 sequences in batches of 4: the last batch holds 2 (padded for the
    # state, cut before the loss); 11 steps in windows of 4: last holds 3.
    x, y = data(n=6, t=11)
    inner = make_inner()
    reference = Reference(inner)
    reference.train_batch(x[:4], y[:4], window=4, backprop=4)
    reference.train_batch(x[4:], y[4:], window=4, backprop=4)
    model = compiled(TruncatedBPTT(inner, window=4, unroll=unroll))
    history = model.fit(x, y, epochs=1, verbose=0, shuffle=False)
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5
    assert model.optimizer.iterations.numpy() == 6
    assert np.isfinite(history.history["loss"][0])


def test_epoch_mode_carries_state_across_batches():
    x, y = data(n=8, t=8)
    inner = make_inner()
    reference = Reference(inner)
    state = reference.train_batch(x[:4], y[:4], window=4, backprop=4)
    reference.train_batch(x[4:], y[4:], window=4, backprop=4, state=state)
    model = compiled(TruncatedBPTT(inner, window=4, reset="epoch"))
    model.fit(x, y, epochs=1, verbose=0)
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5


def two_batches_from_reset_state():
    """Data of two batches, a model, and its weights trained by the
    reference on them, each batch from a reset state."""
    x, y = data(n=8, t=8)
    inner = make_inner()
    reference = Reference(inner)
    reference.train_batch(x[:4], y[:4], window=4, backprop=4)
    reference.train_batch(x[4:], y[4:], window=4, backprop=4)
    return x, y, inner, reference


def test_batch_mode_resets_state_between_batches():
    x, y, inner, reference = two_batches_from_reset_state()
    model = compiled(TruncatedBPTT(inner, window=4))
    model.fit(x, y, epochs=1, verbose=0, shuffle=False)
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5


def test_epoch_mode_resets_at_epoch_start():
    x, y = data(n=4, t=8)
    inner = make_inner()
    model = compiled(TruncatedBPTT(inner, window=4, reset="epoch"))
    model.fit(x, y, epochs=1, verbose=0)
    state_after_fit = inner.layers[0].states[0].numpy()
    assert np.abs(state_after_fit).max() > 0
    seen = []

    class Probe(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append(np.abs(inner.layers[0].states[0].numpy()).max())

    model.fit(x, y, epochs=1, verbose=0, callbacks=[Probe()])
    assert seen == [0.0]


def test_time_axis_sample_weight_is_cut_with_the_window():
    x, y = data(t=8)
    weights = np.ones((B, 8), "float32")
    weights[:, :4] = 0.0  # the first window counts for nothing
    inner = make_inner()
    before = [w.copy() for w in inner.get_weights()]
    model = compiled(TruncatedBPTT(inner, window=4))
    # Only the first window's update would be zero; the state still moves.
    model.fit(x, y, sample_weight=weights, epochs=1, verbose=0)
    assert model.optimizer.iterations.numpy() == 2
    assert max_diff(inner.get_weights(), before) > 0
    zero = compiled(TruncatedBPTT(make_inner(), window=4))
    kept = [w.copy() for w in zero.model.get_weights()]
    zero.fit(x, y, sample_weight=np.zeros((B, 8), "float32"), verbose=0)
    assert max_diff(zero.model.get_weights(), kept) == 0.0


# Forward passes --------------------------------------------------------------


@pytest.mark.parametrize("kind", ["SimpleRNN", "GRU", "LSTM", "custom"])
def test_windowed_predict_equals_whole_sequence(kind):
    x, _ = data(n=6, t=13)
    inner = make_inner(kind)
    model = TruncatedBPTT(inner, window=4)
    predicted = model.predict(x, verbose=0)
    assert predicted.shape == (6, 13, 1)
    expected = []
    for rows in (x[:4], np.concatenate([x[4:], np.zeros_like(x[:2])])):
        inner.layers[0].reset_state()
        expected.append(inner(rows).numpy())
    expected = np.concatenate(expected)[:6]
    np.testing.assert_allclose(predicted, expected, atol=1e-5)


def test_many_to_one_predict_equals_whole_sequence():
    x, _ = data(t=13)
    inner = make_inner(return_sequences=False)
    model = TruncatedBPTT(inner, window=5)
    predicted = model.predict(x, verbose=0)
    inner.layers[0].reset_state()
    np.testing.assert_allclose(predicted, inner(x).numpy(), atol=1e-5)


@pytest.mark.parametrize("unroll", ["auto", False])
def test_masking_is_respected(unroll):
    x, y = data(t=10)
    x[:, 6:] = 0.0  # padded tail, masked out
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(B, None, F)),
            keras.layers.Masking(0.0),
            keras.layers.LSTM(5, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    model = compiled(TruncatedBPTT(inner, window=4))
    predicted = model.predict(x, verbose=0)
    inner.layers[1].reset_state()
    # Unmasked steps match; Keras emits arbitrary values at masked ones.
    np.testing.assert_allclose(
        predicted[:, :6], inner(x).numpy()[:, :6], atol=1e-5
    )
    # A fully masked window adds no loss: weights equal full BPTT on the
    # unmasked part, where window 3 (steps 8-9) is masked entirely.
    plain = keras.models.clone_model(inner)
    plain.set_weights(inner.get_weights())
    compiled(plain)
    plain.layers[1].reset_state()
    model_full = compiled(TruncatedBPTT(inner, window=10, unroll=unroll))
    model_full.fit(x, y, epochs=1, verbose=0)
    plain.train_on_batch(x, y)
    assert max_diff(inner.get_weights(), plain.get_weights()) <= 1e-5


def test_evaluate_matches_whole_sequence_loss():
    x, y = data(t=12)
    inner = make_inner()
    model = compiled(TruncatedBPTT(inner, window=4), metrics=["mae"])
    loss, mae = model.evaluate(x, y, verbose=0)
    inner.layers[0].reset_state()
    pred = inner(x).numpy()
    np.testing.assert_allclose(loss, np.mean((pred - y) ** 2), rtol=1e-5)
    np.testing.assert_allclose(mae, np.mean(np.abs(pred - y)), rtol=1e-5)


def stateless_twin(inner):
    """The same Sequential model and weights, not stateful."""
    layers = [keras.Input((None,) + tuple(inner.inputs[0].shape[2:]), dtype=inner.inputs[0].dtype)]
    for layer in inner.layers:
        config = layer.get_config()
        if "stateful" in config:
            config["stateful"] = False
        layers.append(layer.__class__.from_config(config))
    twin = keras.Sequential(layers)
    twin.set_weights(inner.get_weights())
    return twin


@pytest.mark.parametrize("weights", [None, "sequence", "step"])
def test_metrics_weigh_a_short_last_window_by_its_steps(weights):
    # 11 steps in windows of 4: the last has 3. Keras's mean metrics average
    # each row first; fed whole windows they would weigh the last window's
    # steps 4/3 as much as the others'.
    x, y = data(t=11)
    rng = np.random.default_rng(1)
    sample_weight = {
        None: None,
        "sequence": rng.uniform(size=(B, 1)).astype("float32"),
        "step": rng.uniform(size=(B, 11)).astype("float32"),
    }[weights]
    inner = make_inner("GRU")
    plain = stateless_twin(inner)
    metrics = dict(metrics=["mae", keras.metrics.RootMeanSquaredError()], weighted_metrics=["mae"])
    model = compiled(TruncatedBPTT(inner, window=4), **metrics)
    compiled(plain, **metrics)
    ours = model.evaluate(x, y, sample_weight=sample_weight, verbose=0, return_dict=True)
    keras_own = plain.evaluate(x, y, sample_weight=sample_weight, verbose=0, return_dict=True)
    assert set(ours) == set(keras_own)
    for name, value in keras_own.items():
        np.testing.assert_allclose(ours[name], value, rtol=2e-6, err_msg=name)


def padded_tokens():
    """Token ids of 7 words padded with 0 to 10 steps."""
    tokens = np.random.default_rng(0).integers(1, 9, size=(B, 10))
    tokens[:, 7:] = 0
    return tokens


def token_model(layer):
    return keras.Sequential([
        keras.Input(batch_shape=(B, None), dtype="int32"),
        keras.layers.Embedding(10, 3, mask_zero=True),
        layer(4, stateful=True, return_sequences=True),
        keras.layers.Dense(10),
    ])


def test_masked_token_metrics_equal_the_whole_sequence():
    tokens = padded_tokens()
    inner = token_model(keras.layers.GRU)
    plain = stateless_twin(inner)
    settings = dict(loss=keras.losses.SparseCategoricalCrossentropy(True),
                    metrics=["accuracy", keras.metrics.SparseTopKCategoricalAccuracy(3)])
    model = TruncatedBPTT(inner, window=4)
    model.compile(optimizer="sgd", **settings)
    plain.compile(optimizer="sgd", **settings)
    targets = np.roll(tokens, -1, axis=1)
    ours = model.evaluate(tokens, targets, verbose=0, return_dict=True)
    keras_own = plain.evaluate(tokens, targets, verbose=0, return_dict=True)
    # Keras 3.8's metrics count the masked steps of a whole sequence (not
    # of a reshaped window); checked on 3.15, where they skip them. The
    # loss skips them on both.
    recent = tuple(int(part) for part in keras.version().split(".")[:2]) >= (3, 15)
    compared = keras_own if recent else {"loss": keras_own["loss"]}
    for name, value in compared.items():
        np.testing.assert_allclose(ours[name], value, rtol=2e-6, err_msg=name)


def test_trace_does_not_grow_with_the_number_of_windows():
    calls = []

    class Counting(keras.Model):
        def __init__(self):
            super().__init__()
            self.rnn = keras.layers.GRU(4, stateful=True, return_sequences=True)
            self.out = keras.layers.Dense(1)

        def call(self, x):
            calls.append(x.shape)
            return self.out(self.rnn(x))

    counts = []
    for length in (8, 80):
        calls.clear()
        inner = Counting()
        inner(np.zeros((B, 2, F), "float32"))
        model = compiled(TruncatedBPTT(inner, window=2))
        x, y = data(t=length)
        model.fit(x, y, epochs=1, verbose=0)
        counts.append(len(calls))
    assert counts[0] == counts[1]


class Recording(keras.Model):
    """Records, per call, the time length it sees and whether it unrolls."""

    def __init__(self, unroll=False, layer=keras.layers.SimpleRNN):
        super().__init__()
        self.rnn = layer(4, stateful=True, return_sequences=True, unroll=unroll)
        self.out = keras.layers.Dense(1)
        self.calls = []

    def call(self, x, training=None):
        self.calls.append((x.shape[1], self.rnn.unroll, bool(training)))
        return self.out(self.rnn(x))


def recording(unroll=False, layer=keras.layers.SimpleRNN):
    inner = Recording(unroll, layer)
    inner(np.zeros((B, 2, F), "float32"))
    inner.calls.clear()
    return inner


@pytest.mark.parametrize(
    "unroll,window,backprop,expected",
    [
        # Runs of windows: full ones, then the shorter last one.
        ("auto", 4, None, {4, 3}),
        (True, 4, None, {4, 3}),
        (False, 4, None, set()),
        # The first span is shorter than backprop, the last one too.
        ("auto", 4, 6, {4, 6, 5}),
        # "auto" leaves spans over 32 steps rolled up; True unrolls them.
        ("auto", 33, None, set()),
        ("auto", 32, None, {32}),
        (True, 33, None, {33}),
    ],
)
def test_training_spans_are_unrolled_when_static(unroll, window, backprop, expected):
    length = 11 if window < 11 else 2 * window
    inner = recording()  # a SimpleRNN: "auto" unrolls it
    model = compiled(
        TruncatedBPTT(inner, window=window, backprop=backprop, unroll=unroll)
    )
    x, y = data(t=length)
    model.fit(x, y, epochs=1, verbose=0)
    # Calls that only advance the state (not differentiated) stay rolled up.
    unrolled = {steps for steps, unroll, _ in inner.calls if unroll}
    assert unrolled == expected
    assert inner.rnn.unroll is False  # the layer's own setting is back


@pytest.mark.parametrize("unroll,expected", [("auto", set()), (True, {4, 3})])
def test_auto_leaves_gru_spans_rolled_up(unroll, expected):
    # Unrolling a GRU or LSTM repays its trace only after hundreds of
    # windows: "auto" runs their loop, one trace for spans of every length.
    inner = recording(layer=keras.layers.GRU)
    model = compiled(TruncatedBPTT(inner, window=4, unroll=unroll))
    x, y = data(t=11)
    model.fit(x, y, epochs=1, verbose=0)
    traced = [(steps, unroll) for steps, unroll, training in inner.calls if training]
    assert {steps for steps, unroll in traced if unroll} == expected
    if unroll == "auto":  # one loop over windows of dynamic length
        assert {steps for steps, _ in traced} == {None}
    assert set(model.recurrence_paths.values()) == {"loop" if unroll == "auto" else "unrolled"}


def test_the_train_step_is_traced_once():
    # The optimizer is built before the first trace: built inside it, its
    # new variables would make tf.function trace the whole step again.
    inner = recording()
    model = TruncatedBPTT(inner, window=4)
    model.compile(optimizer="adam", loss="mse")  # Adam builds variables of its own
    assert not model.optimizer.built
    x, y = data(t=8)
    model.fit(x, y, epochs=2, verbose=0)
    assert model.optimizer.built
    # One trace of the window loop's body, and no loop to reach the first
    # update (it starts at step 0).
    assert [steps for steps, _, training in inner.calls if training] == [4]


@pytest.mark.parametrize("backprop", [None, 6])
def test_a_new_window_reuses_the_traced_step(backprop):
    # No layer runs a static span differently (a GRU under "auto"): one
    # traced step takes every window, set between fits, and trains as a
    # step traced for that window would.
    x, y = data(t=11)
    inner = recording(layer=keras.layers.GRU)
    reference = Reference(inner)
    model = compiled(TruncatedBPTT(inner, window=4, backprop=backprop))
    traced = []
    for window in (4, 3, 5):
        model.window = window
        model.fit(x, y, epochs=1, verbose=0)
        reference.train_batch(x, y, window=window, backprop=backprop or window)
        assert set(model.recurrence_paths.values()) == {"loop"}
        traced.append(len([steps for steps, _, training in inner.calls if training]))
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5
    assert model.optimizer.iterations.numpy() == 3 + 4 + 3
    # The span, and with backprop > window its re-run: traced once.
    assert traced == [1 if backprop is None else 2] * 3


class CallCounter(keras.layers.Layer):
    """Counts, in a variable, the calls that run (not the traced ones)."""

    def build(self, input_shape):
        self.calls = self.add_weight(shape=(), initializer="zeros", trainable=False)

    def call(self, x):
        self.calls.assign_add(1.0)
        return x


@pytest.mark.parametrize("kind", ["GRU", "LSTM"])  # one step, or one per window
def test_evaluate_and_predict_run_the_window_in_use(kind):
    counter = CallCounter()
    inner = keras.Sequential([keras.Input(batch_shape=(B, None, F)), counter,
                              make_rnn(kind, stateful=True, return_sequences=True),
                              keras.layers.Dense(1)])
    model = compiled(TruncatedBPTT(inner, window=4))
    x, y = data(t=12)
    runs = []
    for window in (4, 6, 3):
        model.window = window
        before = float(counter.calls.numpy())
        model.evaluate(x, y, verbose=0)
        model.predict(x, verbose=0)
        runs.append(float(counter.calls.numpy()) - before)
    assert runs == [2 * 12 / 4, 2 * 12 / 6, 2 * 12 / 3]


def test_a_new_window_traces_anew_where_spans_are_unrolled():
    inner = recording()  # a SimpleRNN: "auto" unrolls its static spans
    model = compiled(TruncatedBPTT(inner, window=4))
    x, y = data(t=8)
    for window in (4, 2, 4):
        model.window = window
        model.fit(x, y, epochs=1, verbose=0)
    assert [steps for steps, _, training in inner.calls if training] == [4, 2]


@pytest.mark.parametrize("length", ["static", "unknown"])
def test_tf_data_input_equals_numpy_input(length):
    x, y = data(n=8, t=9)
    inner_a, inner_b = recording(), recording()
    inner_b.set_weights(inner_a.get_weights())
    a = compiled(TruncatedBPTT(inner_a, window=4))
    b = compiled(TruncatedBPTT(inner_b, window=4))
    a.fit(x, y, epochs=1, verbose=0, shuffle=False)
    if length == "static":
        dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)
    else:
        dataset = tf.data.Dataset.from_generator(
            lambda: iter([(x[:4], y[:4]), (x[4:], y[4:])]),
            output_signature=(
                tf.TensorSpec((None, None, F), tf.float32),
                tf.TensorSpec((None, None, 1), tf.float32),
            ),
        ).apply(tf.data.experimental.assert_cardinality(2))
    b.fit(dataset, epochs=1, verbose=0)
    unrolled = any(unroll for _, unroll, training in inner_b.calls if training)
    # Unrolling needs a static length; without one the spans stay rolled up.
    assert unrolled == (length == "static")
    assert max_diff(inner_a.get_weights(), inner_b.get_weights()) <= 1e-5


def test_layer_built_with_unroll_works_and_keeps_it():
    # Unrolling needs a static length: evaluate, predict and the windows of
    # unknown length run rolled up, whatever the layer says.
    x, y = data(t=10)
    inner = recording(unroll=True)
    model = compiled(TruncatedBPTT(inner, window=4, unroll=False))
    model.fit(x, y, epochs=1, verbose=0)
    model.evaluate(x, y, verbose=0)
    predicted = model.predict(x, verbose=0)
    assert inner.rnn.unroll is True
    inner.rnn.reset_state()
    np.testing.assert_allclose(predicted, inner(x).numpy(), atol=1e-5)


def test_functional_stacked_model_with_adam_and_validation():
    inputs = keras.Input(batch_shape=(B, None, F))
    hidden = keras.layers.GRU(4, stateful=True, return_sequences=True)(inputs)
    hidden = keras.layers.LSTM(5, stateful=True, return_sequences=True)(hidden)
    inner = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    x, _ = data(n=6, t=10)
    model = TruncatedBPTT(inner, window=3)
    predicted = model.predict(x[:4], verbose=0)
    for layer in inner.layers[1:3]:
        layer.reset_state()
    np.testing.assert_allclose(predicted, inner(x[:4]).numpy(), atol=1e-5)
    model.compile(optimizer="adam", loss="mse")
    x, y = data(n=8, t=10)
    history = model.fit(
        x, y, epochs=2, validation_data=data(n=6, t=10, seed=1), verbose=0
    )
    assert set(history.history) >= {"loss", "val_loss", "grad_norm"}
    assert history.history["loss"][1] < history.history["loss"][0]


def test_epoch_mode_predict_continues_streams_across_batches():
    x, _ = data(n=8, t=6)
    inner = make_inner()
    model = TruncatedBPTT(inner, window=4, reset="epoch")
    predicted = model.predict(x, verbose=0)
    # Row i of the second batch continues row i of the first.
    stream = np.concatenate([x[:4], x[4:]], axis=1)
    inner.layers[0].reset_state()
    expected = inner(stream).numpy()
    np.testing.assert_allclose(predicted[:4], expected[:, :6], atol=1e-5)
    np.testing.assert_allclose(predicted[4:], expected[:, 6:], atol=1e-5)
    # predict starts from a reset state every time.
    np.testing.assert_allclose(model.predict(x, verbose=0), predicted, atol=1e-6)


def test_token_inputs_with_mask_zero():
    tokens = padded_tokens()
    inner = token_model(keras.layers.SimpleRNN)
    model = TruncatedBPTT(inner, window=4)
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(True)
    )
    history = model.fit(tokens, np.roll(tokens, -1, axis=1), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    predicted = model.predict(tokens, verbose=0)
    inner.layers[1].reset_state()
    np.testing.assert_allclose(
        predicted[:, :7], inner(tokens).numpy()[:, :7], atol=1e-5
    )


# Logs ------------------------------------------------------------------------


def test_grad_norm_is_the_real_gradient_norm():
    x, y = data(t=6)
    inner = make_inner()
    reference = Reference(inner)
    with tf.GradientTape() as tape:
        out, _ = reference.run(tf.constant(x), reference.zero_state(B))
        loss = reference.loss(y, reference.dense(out))
    expected = tf.linalg.global_norm(tape.gradient(loss, reference.variables))
    model = compiled(TruncatedBPTT(inner, window=6))
    history = model.fit(x, y, epochs=1, verbose=0)
    np.testing.assert_allclose(
        history.history["grad_norm"][0], expected.numpy(), rtol=1e-5
    )


def test_non_finite_gradients_skip_the_update():
    x, y = data(t=8)
    y[0, 5, 0] = np.nan  # the second window's loss and gradients are NaN
    inner = make_inner()
    reference = Reference(inner)
    reference.train_batch(x[:, :4], y[:, :4], window=4, backprop=4)
    model = compiled(TruncatedBPTT(inner, window=4))
    history = model.fit(x, y, epochs=1, verbose=0)
    assert history.history["skipped_updates"] == [1]
    assert model.skipped_updates == 1
    assert not np.isfinite(history.history["grad_norm"][0])
    # The first window's update happened; the skipped one left no trace.
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5


def test_loss_scale_optimizer_norm_is_unscaled():
    x, y = data(t=6)
    inner_a, inner_b = make_inner(), make_inner()
    inner_b.set_weights(inner_a.get_weights())
    a = compiled(TruncatedBPTT(inner_a, window=3))
    b = TruncatedBPTT(inner_b, window=3)
    b.compile(
        optimizer=keras.optimizers.LossScaleOptimizer(
            keras.optimizers.SGD(LR), initial_scale=1024.0
        ),
        loss="mse",
    )
    norm_a = a.fit(x, y, verbose=0).history["grad_norm"][0]
    norm_b = b.fit(x, y, verbose=0).history["grad_norm"][0]
    np.testing.assert_allclose(norm_a, norm_b, rtol=1e-4)
    assert max_diff(inner_a.get_weights(), inner_b.get_weights()) <= 1e-5


# Bad input -------------------------------------------------------------------


def test_numpy_integer_sizes_are_taken():
    model = TruncatedBPTT(make_inner(), window=np.int64(4), backprop=np.int32(6))
    model.window = np.int64(5)
    assert (model.window, model.backprop) == (5, 6)
    assert type(model.window) is int and type(model.backprop) is int
    auto = TruncatedBPTT(make_inner(), window="auto", min_window=np.int64(2),
                         max_window=np.int64(8), tolerance=np.float32(0.2))
    assert (auto.window, auto.min_window) == (8, 2) and type(auto.window) is int


@pytest.mark.parametrize("window", [0, -3, 2.5, "8", True, None])
def test_bad_window_is_rejected(window):
    with pytest.raises(InvalidInputError, match="window="):
        TruncatedBPTT(make_inner(), window=window)


@pytest.mark.parametrize("unroll", ["yes", 1, None])
def test_bad_unroll_is_rejected(unroll):
    with pytest.raises(InvalidInputError, match=re.escape(f"unroll={unroll!r}")):
        TruncatedBPTT(make_inner(), window=5, unroll=unroll)


def test_backprop_shorter_than_window_is_rejected():
    with pytest.raises(InvalidInputError, match="backprop=3, window=5"):
        TruncatedBPTT(make_inner(), window=5, backprop=3)


def test_unknown_reset_is_rejected():
    with pytest.raises(InvalidInputError, match="reset='sequence'"):
        TruncatedBPTT(make_inner(), window=5, reset="sequence")


def test_model_without_stateful_layer_is_rejected():
    inner = keras.Sequential(
        [keras.Input((None, F)), keras.layers.LSTM(3), keras.layers.Dense(1)]
    )
    with pytest.raises(InvalidInputError, match="stateful=True"):
        TruncatedBPTT(inner, window=5)


def test_model_with_fixed_time_length_is_rejected():
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(B, 20, F)),
            keras.layers.LSTM(3, stateful=True, return_sequences=True),
        ]
    )
    with pytest.raises(InvalidInputError, match="fixed time length of 20"):
        TruncatedBPTT(inner, window=5)


def test_not_a_model_is_rejected():
    with pytest.raises(InvalidInputError, match="keras.Model"):
        TruncatedBPTT(keras.layers.LSTM(3, stateful=True), window=5)


def test_input_without_time_axis_is_rejected():
    model = compiled(TruncatedBPTT(make_inner(), window=5))
    with pytest.raises(InvalidInputError, match=r"axis 1 \(time\)"):
        model.fit(np.zeros((B,), "float32"), np.zeros((B,), "float32"), verbose=0)


def test_time_lengths_that_differ_are_rejected():
    model = compiled(TruncatedBPTT(make_inner(), window=5))
    x, y = data(t=10)
    with pytest.raises(InvalidInputError, match="same length"):
        model.fit(x, y[:, :7], verbose=0)


def test_shuffle_in_epoch_mode_is_rejected():
    model = compiled(TruncatedBPTT(make_inner(), window=5, reset="epoch"))
    x, y = data(t=10)
    with pytest.raises(InvalidInputError, match="shuffle=True"):
        model.fit(x, y, shuffle=True, verbose=0)


def test_batch_larger_than_state_is_rejected():
    model = compiled(TruncatedBPTT(make_inner(), window=5))
    x, y = data(n=8, t=10)
    with pytest.raises(InvalidInputError, match="batch_size=4"):
        model.fit(x, y, batch_size=8, verbose=0)


def test_stateful_backward_layer_is_rejected():
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(B, None, F)),
            keras.layers.LSTM(3, stateful=True, go_backwards=True),
        ]
    )
    with pytest.raises(InvalidInputError, match="go_backwards"):
        TruncatedBPTT(inner, window=5)


def test_non_stateful_recurrent_layer_warns():
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(B, None, F)),
            keras.layers.LSTM(3, stateful=True, return_sequences=True),
            keras.layers.GRU(3, return_sequences=True),
        ]
    )
    with pytest.warns(UserWarning, match="stateful=False"):
        TruncatedBPTT(inner, window=5)


# Saving ----------------------------------------------------------------------


def test_keras_file_round_trip_and_resumed_training(tmp_path):
    x, y = data(t=10)
    model = compiled(TruncatedBPTT(make_inner("custom"), window=4, backprop=6))
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "tbptt.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, TruncatedBPTT)
    assert (loaded.window, loaded.backprop, loaded.reset) == (4, 6, "batch")
    assert max_diff(loaded.get_weights(), model.get_weights()) == 0.0
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6
    )
    # Resumed training continues from the saved optimizer state.
    model.fit(x, y, epochs=1, verbose=0)
    loaded.fit(x, y, epochs=1, verbose=0)
    assert max_diff(loaded.get_weights(), model.get_weights()) <= 1e-6
    assert loaded.optimizer.iterations.numpy() == 6


def test_a_backprop_that_follows_the_window_is_saved_so(tmp_path):
    model = compiled(TruncatedBPTT(make_inner("GRU"), window=4))
    assert model.get_config()["backprop"] is None
    model.save(tmp_path / "follows.keras")
    loaded = keras.models.load_model(tmp_path / "follows.keras")
    # A new window takes its backprop along, as on the saved model.
    loaded.window = 7
    assert (loaded.window, loaded.backprop) == (7, 7)
    fixed = compiled(TruncatedBPTT(make_inner("GRU"), window=4, backprop=6))
    assert fixed.get_config()["backprop"] == 6


def test_inner_model_round_trip(tmp_path):
    inner = make_inner("GRU")
    model = compiled(TruncatedBPTT(inner, window=4))
    x, y = data(t=10)
    model.fit(x, y, epochs=1, verbose=0)
    path = tmp_path / "inner.keras"
    inner.save(path)
    rewrapped = compiled(TruncatedBPTT(keras.models.load_model(path), window=4))
    assert max_diff(rewrapped.model.get_weights(), inner.get_weights()) == 0.0
    rewrapped.fit(x, y, epochs=1, verbose=0)


def test_summary_runs(capsys):
    model = TruncatedBPTT(make_inner(), window=4)
    model.summary()
    out = capsys.readouterr().out
    assert re.search(r"lstm\w* \(LSTM\)", out)
    assert "window=4, backprop=4, reset='batch'" in out


def test_fit_and_summary_take_keras_arguments_positionally_and_by_name():
    x, y, inner, reference = two_batches_from_reset_state()
    model = compiled(TruncatedBPTT(inner, window=4))
    # x, y, batch_size, epochs, verbose, callbacks, validation_split,
    # validation_data, shuffle: Keras's own order.
    history = model.fit(x, y, 4, 1, 0, None, 0.0, None, False)
    assert len(history.history["loss"]) == 1
    assert max_diff(inner.get_weights(), reference.weights()) <= 1e-5
    with pytest.raises(TypeError, match=r"TruncatedBPTT.fit\(\).*frobnicate"):
        model.fit(x, y, frobnicate=True)
    lines = []
    model.summary(print_fn=lines.append)
    assert "Truncated BPTT: window=4" in lines[-1]
    assert any(inner.layers[0].name in line for line in lines)  # expanded


def test_epoch_mode_refuses_a_layout_that_breaks_the_streams():
    from keras_gradwatch.streams import make_streams

    inner = make_inner()
    model = compiled(TruncatedBPTT(inner, window=4, reset="epoch"))
    x, y = make_streams(np.random.default_rng(0).uniform(size=(4 * 8 * 3 + 1, F)).astype("float32"), B, 8)
    with pytest.raises(InvalidInputError, match=f"batch_size=2 with reset='epoch'.*batch_size={B}"):
        model.fit(x, y[..., :1], batch_size=2, epochs=1, verbose=0)
    with pytest.raises(InvalidInputError, match="the last batch would hold 2 rows"):
        model.fit(x[:-2], y[:-2, ..., :1], epochs=1, verbose=0)
    history = model.fit(x, y[..., :1], epochs=1, verbose=0)  # the laid-out streams
    assert len(history.history["loss"]) == 1


# Data checks before any step ---------------------------------------------------


def stream_data(streams=B, chunks=3, t=8, seed=0):
    """`make_streams` arrays for `streams` streams of `chunks` chunks of `t`
    steps, with targets of the model's one output."""
    from keras_gradwatch.streams import make_streams

    steps = np.random.default_rng(seed).normal(size=(streams * chunks * t + 1, F))
    x, y = make_streams(steps.astype("float32"), streams, t)
    return x, y[..., :1]


def stream_dataset(streams=B, chunks=3, t=8, targets=1):
    """The same layout as a tf.data.Dataset of batches."""
    from keras_gradwatch.streams import make_streams

    steps = np.random.default_rng(0).normal(size=(streams * chunks * t + 1, F))
    batches = make_streams(tf.data.Dataset.from_tensor_slices(steps.astype("float32")), streams, t)
    return batches if targets is None else batches.map(lambda x, y: (x, y[..., :targets]))


def epoch_model(**kwargs):
    return compiled(TruncatedBPTT(make_inner(**kwargs), window=4, reset="epoch"))


@pytest.mark.parametrize(
    "make_kwargs, match",
    [
        # Rows that are not whole batches of the 4 streams.
        (lambda: {"validation_data": data(n=6, t=8)},
         r"validation_data\[0\] with 6 rows .*multiple of 4 rows"),
        # Rows a multiple of 4, but laid out for 2 streams.
        (lambda: {"validation_data": stream_data(streams=2, chunks=4)},
         r"validation_data\[0\] laid out by make_streams for 2 streams.*batch_size=4"),
        # Refused after a full epoch before, naming batch_size.
        (lambda: {"validation_data": stream_data(seed=1), "validation_batch_size": 2},
         r"validation_batch_size=2 with reset='epoch'.*Pass validation_batch_size=4"),
        (lambda: {"validation_data": stream_data(seed=1), "validation_batch_size": 8},
         r"validation_batch_size=8, but .* built for batches of 4"),
        (lambda: {"validation_split": 0.3, "validation_batch_size": 2},
         r"validation_batch_size=2 with reset='epoch'"),
        (lambda: {"validation_data": stream_dataset(streams=2, chunks=4)},
         r"tf\.data\.Dataset as validation_data with batches of 2 rows.*hold 4 streams"),
        # The training data itself, laid out for 8 streams (24 rows: 6 batches of 4).
        (lambda: {"x": stream_data(streams=8)[0], "y": stream_data(streams=8)[1]},
         r"Received x laid out by make_streams for 8 streams.*batch_size=4"),
        (lambda: {"x": stream_dataset(streams=8, chunks=1), "y": None},
         r"tf\.data\.Dataset as x with batches of 8 rows"),
    ],
)
def test_epoch_mode_checks_validation_data_before_any_step(make_kwargs, match):
    model = epoch_model()
    x, y = stream_data()
    kwargs = {"x": x, "y": y, "epochs": 1, **make_kwargs()}
    refused_before_any_step(model, "fit", match, **kwargs)


def test_a_validation_split_that_cuts_a_batch_suggests_one_that_does_not():
    model = epoch_model()
    x, y = stream_data()  # 12 rows: 3 batches of 4 streams
    # Keras cuts at floor(12 * 0.8) = 9 rows: 9 to train, 3 to validate.
    message = refused_before_any_step(
        model, "fit", r"validation_split=0\.2 with reset='epoch'.*at row 9", x, y, validation_split=0.2
    )
    suggested = float(re.search(r"Pass validation_split=([0-9.]+)", message).group(1))
    assert suggested == 0.3  # the last of 3 batches: floor(12 * 0.7) = 8
    history = model.fit(x, y, validation_split=suggested, epochs=1, verbose=0)
    assert np.isfinite(history.history["val_loss"][0])


@pytest.mark.parametrize(
    "method, args, kwargs, match",
    [
        ("evaluate", lambda: data(n=6, t=8), {}, r"Received x with 6 rows"),
        ("evaluate", lambda: stream_data(), {"batch_size": 2}, r"batch_size=2 with reset='epoch'"),
        ("evaluate", lambda: stream_data(streams=8), {}, r"x laid out by make_streams for 8 streams"),
        ("predict", lambda: stream_data(streams=8)[:1], {}, r"x laid out by make_streams for 8 streams"),
        ("predict", lambda: (stream_dataset(streams=8, chunks=1),), {}, r"Dataset as x with batches of 8 rows"),
        ("predict", lambda: data(n=6, t=8)[:1], {}, r"Received x with 6 rows"),
    ],
)
def test_epoch_mode_checks_evaluate_and_predict_inputs(method, args, kwargs, match):
    refused_before_any_step(epoch_model(), method, match, *args(), **kwargs)


def test_next_step_targets_of_every_feature_are_refused_naming_targets():
    from keras_gradwatch.streams import make_streams

    model = epoch_model()
    steps = np.random.default_rng(0).normal(size=(B * 3 * 8 + 1, F)).astype("float32")
    x, y = make_streams(steps, B, 8)  # y: the next step of all 3 features
    message = refused_before_any_step(
        model, "fit", r"y of shape \(12, 8, 3\), for a model whose output is shaped \(4, 8, 1\)", x, y
    )
    assert "targets='next'" in message and "targets=None" in message and "y[..., :1]" in message
    refused_before_any_step(model, "evaluate", r"y of shape \(12, 8, 3\)", x, y)
    refused_before_any_step(
        model, "fit", r"Dataset as x whose targets are shaped \(4, 8, 3\).*targets='next'",
        stream_dataset(targets=None),
    )


@pytest.mark.parametrize(
    "inner_kwargs, make_kwargs, match",
    [
        ({}, lambda x, y: {"y": np.repeat(y, 2, axis=-1)}, r"y of shape \(4, 12, 2\)"),
        ({}, lambda x, y: {"validation_data": (x, np.repeat(y, 2, axis=-1))},
         r"validation_data\[1\] of shape \(4, 12, 2\)"),
        # Many-to-one: targets with a time axis would be broadcast too.
        ({"return_sequences": False}, lambda x, y: {}, r"y of shape \(4, 12, 1\).*shaped \(4, 1\)"),
    ],
)
def test_targets_a_loss_would_broadcast_are_refused_in_batch_mode(inner_kwargs, make_kwargs, match):
    model = compiled(TruncatedBPTT(make_inner(**inner_kwargs), window=4))
    x, y = data()
    refused_before_any_step(model, "fit", match, **{"x": x, "y": y, **make_kwargs(x, y)})


def test_valid_stream_layouts_still_train():
    model = epoch_model()
    x, y = stream_data()
    history = model.fit(x, y, validation_data=stream_data(chunks=2, seed=1), epochs=1, verbose=0)
    assert np.isfinite(history.history["val_loss"][0])
    # A dataset of unknown batch size and a generator: nothing to check, no error.
    unknown = tf.data.Dataset.from_tensor_slices((x, y)).batch(B)
    assert unknown.element_spec[0].shape[0] is None
    model.fit(unknown, epochs=1, verbose=0)

    def batches():
        yield x[:B], y[:B]
        yield x[B : 2 * B], y[B : 2 * B]

    model.fit(batches(), steps_per_epoch=2, epochs=1, verbose=0)
    assert model.evaluate(stream_dataset(), verbose=0) > 0


def test_batch_mode_takes_any_rows_and_smaller_validation_batches():
    model = compiled(TruncatedBPTT(make_inner(), window=4))
    x, y = data(n=6, t=8)
    x_val, y_val = data(n=5, t=8, seed=1)
    streams_x, streams_y = stream_data(streams=8, chunks=1)  # 8 streams, batches of 4
    history = model.fit(
        np.concatenate([x, streams_x]), np.concatenate([y[..., :1], streams_y]),
        validation_data=(x_val, y_val), validation_batch_size=2, epochs=1, verbose=0,
    )
    assert np.isfinite(history.history["val_loss"][0])


def test_sparse_labels_are_not_judged():
    vocab = 6
    ids = np.random.default_rng(0).integers(0, vocab, size=(B, 8)).astype("int32")
    # Class ids (4, 8) and (4, 8, 1) for logits (4, 8, 6).
    for labels in (ids, ids[..., None]):
        inner = keras.Sequential([
            keras.Input(batch_shape=(B, None), dtype="int32"),
            keras.layers.Embedding(vocab, 3),
            keras.layers.SimpleRNN(4, stateful=True, return_sequences=True),
            keras.layers.Dense(vocab, activation="softmax"),
        ])
        model = TruncatedBPTT(inner, window=4, reset="epoch")
        model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
        model.fit(ids, labels, epochs=1, verbose=0)


def test_a_custom_loss_may_read_targets_of_another_shape():
    # A target and a second channel side by side, read on purpose.
    def first_channel_mse(y_true, y_pred):
        return keras.ops.mean(keras.ops.square(y_true[..., :1] - y_pred))

    model = TruncatedBPTT(make_inner(), window=4)
    model.compile(optimizer="sgd", loss=first_channel_mse)
    x, y = data()
    model.fit(x, np.repeat(y, 3, axis=-1), epochs=1, verbose=0)


@pytest.mark.parametrize(
    "y_shape, output_shape, matched, broadcasts",
    [
        ((8, 10, 4), (4, 10, 1), ((8, 10, 4), (4, 10, 1)), True),  # 4 channels vs 1
        ((8, 10, 1), (4, 10, 3), ((8, 10, 1), (4, 10, 3)), True),
        ((8, 10), (4, 10, 1), ((8, 10), (4, 10)), False),  # Keras squeezes the output
        ((8, 10, 1), (4, 10), ((8, 10), (4, 10)), False),  # ... or the targets
        ((8,), (4, 1), ((8, 1), (4, 1)), False),  # binary labels (N,): expanded
        ((8, 10, 1), (4, 1), ((8, 10), (4, 1)), True),  # many-to-one, targets in time
        ((8, 10), (4, 10, 3), ((8, 10), (4, 10, 3)), True),  # ranks still differ
        ((None, None, 4), (4, None, 1), ((None, None, 4), (4, None, 1)), True),
        ((None, None, 1), (4, 7, 1), ((None, None, 1), (4, 7, 1)), False),  # unknown: no claim
        ((8, 10, 3), (4, 10, 3), ((8, 10, 3), (4, 10, 3)), False),  # rows are not compared
    ],
)
def test_target_shapes_as_keras_losses_match_them(y_shape, output_shape, matched, broadcasts):
    from keras_gradwatch.tbptt import _target_shapes

    assert _target_shapes.rank_matched(y_shape, output_shape) == matched
    assert _target_shapes.broadcasts(y_shape, output_shape) is broadcasts


class _MySquaredError(keras.losses.MeanSquaredError):
    def call(self, y_true, y_pred):
        return super().call(y_true[..., :1], y_pred)


@pytest.mark.parametrize(
    "loss, name",
    [
        ("mse", "mean_squared_error"),
        ("MeanAbsoluteError", "mean_absolute_error"),
        (keras.losses.binary_crossentropy, "binary_crossentropy"),
        (keras.losses.Huber(), "huber"),
        (keras.losses.CategoricalCrossentropy(from_logits=True), "categorical_crossentropy"),
        (["mse"], "mean_squared_error"),
        ({"out": "mae"}, "mean_absolute_error"),
        ("sparse_categorical_crossentropy", None),
        (keras.losses.SparseCategoricalCrossentropy(), None),
        ("crossentropy", None),  # Keras picks the kind from the shapes
        (_MySquaredError(), None),  # a subclass may read targets its own way
        (lambda y_true, y_pred: y_pred, None),
        (["mse", "mae"], None),  # several outputs
        (None, None),
    ],
)
def test_only_keras_elementwise_losses_are_judged(loss, name):
    from keras_gradwatch.tbptt import _target_shapes

    assert _target_shapes.elementwise_loss_name(loss) == name


def test_a_dataset_of_unknown_shapes_is_not_judged():
    from keras_gradwatch.tbptt import _layout_checks

    def steps():
        yield np.zeros((B, 8, F), "float32"), np.zeros((B, 8, 3), "float32")

    model = epoch_model()
    for shape in (None, (None, None, None)):  # unknown rank, unknown sizes
        dataset = tf.data.Dataset.from_generator(
            steps, output_signature=(tf.TensorSpec(shape), tf.TensorSpec(shape))
        )
        data = _layout_checks.Data("x", dataset, None, "batch_size", None)
        assert model._data_checks.check(data) is None  # no claim, no error


def test_step_hands_its_readings_over_and_hides_them_from_the_logs():
    keras.utils.set_random_seed(0)
    model = TruncatedBPTT(make_inner(), window=4)
    model.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    x, y = data(n=2 * B)
    seen = []

    class Take(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            tracker = next(m for m in self.model.metrics if m.name == "loss")
            seen.append((self.model.train_function.take(), float(tracker.count.numpy()),
                         int(self.model.optimizer.iterations.numpy()), sorted(logs)))

    history = model.fit(x, y, batch_size=B, epochs=1, verbose=0, callbacks=[Take()])
    assert len(seen) == 2
    for readings, count, iterations, keys in seen:
        # Three windows a batch (12 steps, window 4): three updates each.
        assert readings.loss_count == count and readings.iterations == iterations
        assert readings.learning_rate == pytest.approx(0.01)
        assert "_gradwatch_readings" not in keys
    assert seen[1][2] == 6
    assert not any(key.startswith("_gradwatch") for key in history.history)
