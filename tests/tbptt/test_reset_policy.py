"""`reset`: one setting owning the reset and shuffle decisions, also when
it is changed on a built wrapper."""

import keras
import numpy as np
import pytest

from keras_gradwatch import InvalidInputError
from keras_gradwatch import TruncatedBPTT


def _wrapper(reset):
    inner = keras.Sequential([
        keras.Input(batch_shape=(2, None, 1)),
        keras.layers.SimpleRNN(3, stateful=True, return_sequences=True),
        keras.layers.Dense(1),
    ])
    model = TruncatedBPTT(inner, window=2, reset=reset)
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_a_bad_reset_is_refused_when_built_and_when_set():
    with pytest.raises(InvalidInputError, match=r"reset='epochs'.*reset='batch'"):
        _wrapper("epochs")
    model = _wrapper("batch")
    with pytest.raises(InvalidInputError, match=r"Received: reset=None"):
        model.reset = None
    assert model.reset == "batch"  # unchanged by the refused value


def test_setting_reset_moves_every_decision_with_it():
    model = _wrapper("batch")
    x = np.zeros((4, 4, 1), "float32")
    model.reset = "epoch"
    assert model.reset == "epoch" and model.get_config()["reset"] == "epoch"
    with pytest.raises(InvalidInputError, match="shuffle=True with reset='epoch'"):
        model.fit(x, x, shuffle=True, verbose=0)
    # The data checks follow too: epoch mode wants whole batches of streams.
    with pytest.raises(InvalidInputError, match="3 rows with reset='epoch'"):
        model.evaluate(x[:3], x[:3], verbose=0)
    model.reset = "batch"
    model.evaluate(x[:3], x[:3], verbose=0)  # independent rows: any count


def test_epoch_mode_carries_the_state_from_batch_to_batch_and_resets_per_epoch():
    # An input of ones into a linear RNN: the state after each batch only
    # grows while it carries, so a reset shows as a repeated first output.
    inner = keras.Sequential([
        keras.Input(batch_shape=(1, None, 1)),
        keras.layers.SimpleRNN(1, stateful=True, return_sequences=True, activation=None,
                               kernel_initializer="ones", recurrent_initializer="ones",
                               use_bias=False),
    ])
    x = np.ones((2, 2, 1), "float32")
    carried = TruncatedBPTT(inner, window=2, reset="epoch").predict(x, verbose=0)
    np.testing.assert_array_equal(carried[:, :, 0], [[1, 2], [3, 4]])
    fresh = TruncatedBPTT(inner, window=2, reset="batch").predict(x, verbose=0)
    np.testing.assert_array_equal(fresh[:, :, 0], [[1, 2], [1, 2]])
