"""`make_streams`: one long sequence as parallel streams for reset="epoch"."""

import numpy as np
import pytest

from keras_gradwatch import InvalidInputError
from keras_gradwatch.streams import make_streams


@pytest.mark.parametrize("batch_size, chunk", [(1, 5), (3, 4), (4, None), (5, 1)])
def test_row_i_of_each_batch_continues_row_i_of_the_previous(batch_size, chunk):
    sequence = np.arange(103)
    x, y = make_streams(sequence, batch_size, chunk)
    rows, steps = x.shape
    assert rows % batch_size == 0
    batches = x.reshape(rows // batch_size, batch_size, steps)
    for j in range(1, len(batches)):
        # Consecutive integers: batch j's row i starts where batch j-1's ended.
        np.testing.assert_array_equal(batches[j][:, 0], batches[j - 1][:, -1] + 1)
    # Stream i, read across batches, is one contiguous slice of the sequence.
    streams = batches.transpose(1, 0, 2).reshape(batch_size, -1)
    length = streams.shape[1]
    for i in range(batch_size):
        np.testing.assert_array_equal(streams[i], sequence[i * length : (i + 1) * length])
    np.testing.assert_array_equal(y, x + 1)  # next-step targets
    assert length == ((103 - 1) // batch_size) // (chunk or 1) * (chunk or 1)


def test_feature_rows_and_token_ids_keep_their_trailing_axes():
    rows = np.random.default_rng(0).normal(size=(41, 3)).astype("float32")
    x, y = make_streams(rows, batch_size=2, chunk=5)
    assert x.shape == (8, 5, 3) and x.dtype == np.float32
    np.testing.assert_array_equal(x[1, 0], rows[20])  # stream 1 starts at 40 // 2
    np.testing.assert_array_equal(y[1, 0], rows[21])
    only = make_streams(rows, batch_size=2, chunk=5, targets=None)
    assert only.shape == (8, 5, 3)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"batch_size": 0}, "batch_size=0"),
        ({"batch_size": 2, "chunk": 0}, "chunk=0"),
        ({"batch_size": 2, "targets": "same"}, "targets='same'"),
        ({"batch_size": 8, "chunk": 4}, "too short"),
    ],
)
def test_bad_arguments_say_what_to_pass(kwargs, match):
    with pytest.raises(InvalidInputError, match=match):
        make_streams(np.arange(20), **kwargs)


# A tf.data.Dataset of steps: the same batches, as a dataset of batches.


def dataset_batches(dataset):
    """Every batch of a dataset, each element stacked: (batches, ...)."""
    return [np.stack(parts) for parts in zip(*dataset.as_numpy_iterator())]


def numpy_batches(rows, batch_size):
    """`fit(rows, batch_size=B, shuffle=False)`'s batches: (batches, B, ...)."""
    return rows.reshape((-1, batch_size) + rows.shape[1:])


@pytest.mark.parametrize("features", [None, 3])
@pytest.mark.parametrize(
    "batch_size, chunk, targets",
    [(1, 5, "next"), (3, 4, "next"), (4, None, "next"), (5, 1, "next"), (3, 4, None), (2, None, None)],
)
def test_a_dataset_gives_the_arrays_batches(batch_size, chunk, targets, features):
    import tensorflow as tf

    if features is None:
        sequence = np.arange(103)  # token ids
    else:
        sequence = np.random.default_rng(0).normal(size=(103, features)).astype("float32")
    arrays = make_streams(sequence, batch_size, chunk, targets)
    arrays = arrays if targets == "next" else (arrays,)
    dataset = make_streams(tf.data.Dataset.from_tensor_slices(sequence), batch_size, chunk, targets)
    expected = [numpy_batches(rows, batch_size) for rows in arrays]
    assert int(dataset.cardinality()) == len(expected[0])
    specs = dataset.element_spec if targets == "next" else (dataset.element_spec,)
    if targets is None:
        dataset = dataset.map(lambda x: (x,))
    got = dataset_batches(dataset)
    assert len(got) == len(expected)
    for spec, batches, want in zip(specs, got, expected):
        assert tuple(spec.shape) == want.shape[1:]  # static: (batch_size, chunk, features...)
        assert spec.dtype.as_numpy_dtype == want.dtype
        np.testing.assert_array_equal(batches, want)


def test_a_dataset_of_unknown_length_is_counted():
    import tensorflow as tf

    dataset = tf.data.Dataset.range(300).filter(lambda step: step % 3 > 0)
    assert int(dataset.cardinality()) == tf.data.UNKNOWN_CARDINALITY
    streams = make_streams(dataset, batch_size=4, chunk=6)
    x, y = make_streams(np.array([s for s in range(300) if s % 3]), batch_size=4, chunk=6)
    assert int(streams.cardinality()) == len(x) // 4
    got_x, got_y = dataset_batches(streams)
    np.testing.assert_array_equal(got_x, numpy_batches(x, 4))
    np.testing.assert_array_equal(got_y, numpy_batches(y, 4))


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda tf: tf.data.Dataset.range(50).repeat(), r"infinite tf\.data\.Dataset.*take\(n\)"),
        (lambda tf: tf.data.Dataset.from_tensor_slices(np.zeros((50, 3))).batch(5),
         r"shaped \(None, 3\).*\.unbatch\(\)"),
        (lambda tf: tf.data.Dataset.range(50).batch(5), r"shaped \(None,\).*\.unbatch\(\)"),
        (lambda tf: tf.data.Dataset.range(50).map(lambda s: (s, s + 1)), r"elements \(TensorSpec"),
        (lambda tf: tf.data.Dataset.range(16), "16 steps, too short"),
        (lambda tf: tf.data.Dataset.range(40).filter(lambda s: s < 16), "16 steps, too short"),
    ],
)
def test_a_bad_dataset_says_what_to_pass(make, match):
    import tensorflow as tf

    with pytest.raises(InvalidInputError, match=match):
        make_streams(make(tf), batch_size=4, chunk=4)


def test_fit_on_the_dataset_trains_as_on_the_arrays():
    import keras
    import tensorflow as tf

    from keras_gradwatch import TruncatedBPTT

    tokens = np.random.default_rng(0).integers(0, 7, size=65)

    def fit(*data, **kwargs):
        keras.utils.set_random_seed(0)
        inner = keras.Sequential([
            keras.Input(batch_shape=(2, None), dtype="int64"),
            keras.layers.Embedding(7, 4),
            keras.layers.SimpleRNN(5, stateful=True, return_sequences=True),
            keras.layers.Dense(7),
        ])
        model = TruncatedBPTT(inner, window=4, reset="epoch")
        model.compile(optimizer=keras.optimizers.SGD(0.5),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(*data, epochs=2, verbose=0, **kwargs)
        return history.history["loss"], inner.get_weights()

    x, y = make_streams(tokens, batch_size=2, chunk=8)  # 4 batches of 2 streams
    losses, weights = fit(x, y, batch_size=2)
    dataset_losses, dataset_weights = fit(
        make_streams(tf.data.Dataset.from_tensor_slices(tokens), batch_size=2, chunk=8)
    )
    np.testing.assert_allclose(dataset_losses, losses, rtol=1e-6)
    for got, want in zip(dataset_weights, weights):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


# What the layout remembers, and the checks that read it.


def test_arrays_remember_the_streams_they_were_laid_out_for():
    import copy
    import pickle

    from keras_gradwatch.streams import StreamArray

    rows = np.random.default_rng(0).normal(size=(41, 3)).astype("float32")
    x, y = make_streams(rows, batch_size=4, chunk=5)
    assert isinstance(x, StreamArray) and isinstance(x, np.ndarray)
    assert (x.streams, x.role, y.streams, y.role) == (4, "inputs", 4, "targets")
    assert make_streams(rows, batch_size=2, chunk=5, targets=None).streams == 2
    # Slices, element-wise results, copies and pickles keep the layout.
    for kept in (y[..., :1], x[4:], x * 2.0, x.astype("float64"), x.copy(),
                 pickle.loads(pickle.dumps(x)), copy.deepcopy(x)):
        assert kept.streams == 4
    np.testing.assert_array_equal(pickle.loads(pickle.dumps(y)), y)
    # One number is a plain scalar; asarray gives a plain array.
    assert type(x.sum()) is np.float32 and float(x.sum()) == float(np.asarray(x).sum())
    assert type(np.asarray(x)) is np.ndarray


def test_a_dataset_remembers_its_streams_as_its_static_batch_size():
    import tensorflow as tf

    batches = make_streams(tf.data.Dataset.range(103), batch_size=4, chunk=5)
    # What a user does with a dataset keeps the static batch size.
    used = batches.map(lambda x, y: (x, y)).cache().prefetch(2).take(3)
    assert [tuple(spec.shape) for spec in used.element_spec] == [(4, 5), (4, 5)]


def test_a_stateless_keras_model_trains_on_stream_arrays_as_on_plain_arrays():
    import keras

    x, y = make_streams(np.random.default_rng(0).normal(size=(81, 3)).astype("float32"), 4, 5)

    def fit(x, y):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((None, 3)), keras.layers.SimpleRNN(4, return_sequences=True),
                                  keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        return model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0).history["loss"]

    assert fit(x, y[..., :1]) == fit(np.asarray(x), np.asarray(y)[..., :1])


def issue_model(streams=32, features=4):
    """The layout of the issue: 32 streams, 4 features, one output."""
    import keras

    from keras_gradwatch import TruncatedBPTT

    inner = keras.Sequential([
        keras.Input(batch_shape=(streams, None, features)),
        keras.layers.SimpleRNN(2, stateful=True, return_sequences=True),
        keras.layers.Dense(1),
    ])
    model = TruncatedBPTT(inner, window=5, reset="epoch")
    model.compile(optimizer="sgd", loss="mse")
    return model


@pytest.mark.parametrize(
    "case, match",
    [
        ("validation of 100 rows", r"validation_data\[0\] with 100 rows .*multiple of 32"),
        ("validation for 16 streams", r"validation_data\[0\] laid out by make_streams for 16 streams"),
        ("training for 64 streams", r"Received x laid out by make_streams for 64 streams.*batch_size=32"),
        ("validation_batch_size=16", r"Received: validation_batch_size=16 with reset='epoch'"),
        ("4-channel next-step targets", r"y of shape \(256, 10, 4\).*targets='next'.*targets=None"),
    ],
)
def test_the_issue_layouts_are_refused_before_any_step(case, match):
    from conftest import refused_before_any_step

    steps = np.random.default_rng(0).normal(size=(32 * 80 + 1, 4)).astype("float32")
    x, y = make_streams(steps, 32, 10)  # 8 batches of 32 streams
    kwargs = {"x": x, "y": y[..., :1], "epochs": 1}
    if case == "validation of 100 rows":
        kwargs["validation_data"] = (x[:100], y[:100, :, :1])
    elif case == "validation for 16 streams":
        x16, y16 = make_streams(steps, 16, 10)
        kwargs["validation_data"] = (x16, y16[..., :1])
    elif case == "training for 64 streams":
        x64, y64 = make_streams(steps[: 64 * 20 + 1], 64, 10)
        kwargs.update(x=x64, y=y64[..., :1])
    elif case == "validation_batch_size=16":
        kwargs.update(validation_data=(x, y[..., :1]), validation_batch_size=16)
    else:
        kwargs["y"] = y  # make_streams' targets="next": all 4 features
    refused_before_any_step(issue_model(), "fit", match, **kwargs)
