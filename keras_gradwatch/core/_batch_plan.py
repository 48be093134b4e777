"""Private: how `TruncatedBPTT` checks a batch and plans its windows.

From a batch's static shapes (at trace time): the batch size the stateful
layers were built for, whether the model's outputs have a time axis (one
loss per window) or not (many-to-one: only the final window has a loss),
and the output structure; and clear errors for batches that do not fit.
"""

import keras

from keras_gradwatch.core import _sequence
from keras_gradwatch.core import _state
from keras_gradwatch.core.errors import InvalidInputError


class Plan:
    """What one batch's static shapes tell about how to window it.

    Attributes:
        batch_size: The stateful layers' batch size (batches are padded to it).
        has_time: Whether the outputs have a time axis.
        output_spec: The structure of the outputs.
    """

    def __init__(self, batch_size, has_time, output_spec):
        self.batch_size = batch_size
        self.has_time = has_time
        self.output_spec = output_spec


def plan(model, x, y, window):
    """Checks a batch's static shapes; decides how to window it.

    Args:
        model: The wrapped model (with stateful recurrent layers).
        x, y: The batch's inputs and targets (y may be None).
        window: Steps per window.

    Returns:
        A `Plan`.

    Raises:
        InvalidInputError: Inputs without a time axis or of different
            lengths, a batch larger than the stateful batch size, or
            targets without the outputs' time axis.
    """
    check_time_axis(x)
    length = x_length = _sequence.first_leaf(x).shape[1]
    for leaf in keras.tree.flatten(x):
        if leaf is not None and leaf.shape[1] != x_length:
            raise InvalidInputError(
                "All inputs need the same time length on axis 1. "
                f"Received inputs with shapes "
                f"{[tuple(t.shape) for t in keras.tree.flatten(x)]}."
            )
    batch_size = _state.state_batch_size(_state.stateful_layers(model))
    rows = _sequence.first_leaf(x).shape[0]
    if rows is not None and rows > batch_size:
        raise InvalidInputError(
            f"Received a batch of {rows} sequences, but the stateful "
            f"layers of '{model.name}' were built for batches of "
            f"{batch_size}. Pass batch_size={batch_size} to fit, evaluate "
            f"and predict, or batch your dataset by {batch_size}."
        )
    has_time, output_spec = _sequence.output_time_axes(model, x, batch_size, window)
    if has_time and y is not None:
        for leaf in keras.tree.flatten(y):
            if leaf is None:
                continue
            if leaf.shape.rank < 2 or (length is not None and leaf.shape[1] != length):
                raise InvalidInputError(
                    "The model's outputs have a time axis, so the targets "
                    "need one of the same length as the inputs. Received: "
                    f"x with shape {tuple(_sequence.first_leaf(x).shape)}"
                    f" and y with shape {tuple(leaf.shape)}. Pass y with "
                    "shape (batch, T, ...) matching x's T."
                )
    return Plan(batch_size, has_time, output_spec)


def check_time_axis(x):
    """Raises `InvalidInputError` for an input without a time axis."""
    for leaf in keras.tree.flatten(x):
        if leaf is None:
            continue
        rank = len(leaf.shape)
        if rank < 2:
            raise InvalidInputError(
                "TruncatedBPTT cuts inputs along axis 1 (time), but received "
                f"an input with shape {tuple(leaf.shape)}. Pass sequences "
                "shaped (batch, time, ...)."
            )


def weights_have_time(sample_weight):
    """Whether sample weights are per step, (batch, T), rather than per
    sequence, (batch,) or (batch, 1)."""
    return any(
        t.shape.rank >= 2 and t.shape[1] != 1
        for t in keras.tree.flatten(sample_weight)
        if t is not None
    )

