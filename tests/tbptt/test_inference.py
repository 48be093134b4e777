"""`with_batch_size`: a trained stateful model, rebuilt for another batch."""

import keras
import numpy as np
import pytest

from keras_gradwatch import InvalidInputError
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import layers
from keras_gradwatch.inference import with_batch_size
from keras_gradwatch.streams import make_streams


def trained_language_model():
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([
        keras.Input(batch_shape=(4, None), dtype="int32"),
        keras.layers.Embedding(12, 6),
        layers.LSTM(8, stateful=True, return_sequences=True),
        keras.layers.Dense(12),
    ])
    model = TruncatedBPTT(inner, window=5, reset="epoch")
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    tokens = np.random.default_rng(0).integers(0, 12, size=4 * 40 + 1)
    x, y = make_streams(tokens, batch_size=4, chunk=10)
    model.fit(x, y, epochs=2, verbose=0)
    return model, inner


def test_batch_of_one_reproduces_the_trained_model_step_by_step():
    model, inner = trained_language_model()
    sequences = np.random.default_rng(1).integers(0, 12, size=(4, 9)).astype("int32")
    model.reset_state()
    expected = model.predict(sequences, verbose=0)[0]  # stream 0, whole sequence
    single = with_batch_size(model, 1)
    outputs = [single(sequences[:1, t : t + 1]).numpy()[0, 0] for t in range(9)]  # state carried
    np.testing.assert_allclose(np.stack(outputs), expected, atol=1e-5)
    for a, b in zip(single.get_weights(), inner.get_weights()):
        np.testing.assert_array_equal(a, b)
    # The trained model is untouched: still built for 4 streams.
    assert model.predict(sequences, verbose=0).shape == (4, 9, 12)


def test_functional_model_and_bad_arguments():
    inputs = keras.Input(batch_shape=(3, None, 2))
    hidden = layers.GRU(5, stateful=True, return_sequences=True)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(1)(hidden))
    x = np.random.default_rng(0).normal(size=(3, 7, 2)).astype("float32")
    expected = model(x).numpy()
    wide = with_batch_size(model, 6)
    np.testing.assert_allclose(wide(np.concatenate([x, x])).numpy()[3:], expected, atol=1e-5)
    with pytest.raises(InvalidInputError, match="batch_size=0"):
        with_batch_size(model, 0)
