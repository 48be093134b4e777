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
