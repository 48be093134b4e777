"""Private helpers that cut nested batches along the time and batch axes.

Every helper maps over a nested structure (a tensor, a tuple, a dict...) and
passes `None` leaves through, the way Keras passes `x`, `y` and
`sample_weight` around. Slicing keeps the Keras mask attached to a tensor
(see `_compat.keras_mask`), so losses and metrics still skip masked steps.
"""

import keras
import tensorflow as tf

from keras_gradwatch.core import _compat
from keras_gradwatch.core.errors import InvalidInputError


def _leaves(structure):
    return [t for t in keras.tree.flatten(structure) if t is not None]


def first_leaf(structure):
    """The first tensor of a nested structure."""
    return _leaves(structure)[0]


def time_length(structure):
    """Length of axis 1 of the first leaf: a Python int when static."""
    tensor = first_leaf(structure)
    static = tensor.shape[1]
    return static if static is not None else tf.shape(tensor)[1]


def batch_rows(structure):
    """Number of rows (axis 0) of the first leaf, as a scalar tensor."""
    return tf.shape(first_leaf(structure))[0]


def slice_time(structure, start, stop, length=None):
    """Cuts every leaf to the steps `[start, stop)` of axis 1.

    `length`, when given, is the static number of steps `stop - start`.
    """

    def cut(tensor):
        if tensor is None:
            return None
        out = _with_length(tensor[:, start:stop], length)
        mask = _compat.keras_mask(tensor)
        if mask is not None:
            mask = _with_length(mask[:, start:stop], length)
        return _compat.set_keras_mask(out, mask)

    return keras.tree.map_structure(cut, structure)


def _with_length(tensor, length):
    if length is None:
        return tensor
    shape = tensor.shape.as_list()
    return tf.ensure_shape(tensor, [shape[0], length] + shape[2:])


def take_rows(structure, rows):
    """Keeps the first `rows` rows of every leaf (drops batch padding)."""

    def cut(tensor):
        if tensor is None:
            return None
        out = tensor[:rows]
        mask = _compat.keras_mask(tensor)
        return _compat.set_keras_mask(out, None if mask is None else mask[:rows])

    return keras.tree.map_structure(cut, structure)


def steps_as_rows(structure, steps, per_sequence=False):
    """Makes every time step of `steps` a row: leaves of shape `(B, T,
    ...)` become `(B * T, ...)`; with `per_sequence` (sample weights of
    shape `(B,)` or `(B, 1)`), each row repeats `T` times. Masks follow.

    A Keras mean metric averages each row over its other axes before it
    averages the rows: fed a window at a time, it would weigh a short last
    window as much as a full one. Fed steps as rows, it weighs every step
    alike, as it would the whole sequence.
    """

    def merge(tensor):
        if tensor is None:
            return None
        if per_sequence:
            return tf.repeat(tf.reshape(tensor, [-1]), steps)
        shape = tf.shape(tensor)
        out = tf.reshape(tensor, tf.concat([[shape[0] * shape[1]], shape[2:]], 0))
        mask = _compat.keras_mask(tensor)
        return _compat.set_keras_mask(out, None if mask is None else tf.reshape(mask, [-1]))

    return keras.tree.map_structure(merge, structure)


def pad_rows(structure, batch_size):
    """Pads every leaf with zero rows up to `batch_size` rows.

    Stateful recurrent layers hold one state row per sequence, so a smaller
    last batch is padded to the state's batch size; the padded rows are cut
    off again before any loss, metric or prediction sees them.
    """

    def pad(tensor):
        if tensor is None:
            return None
        if tensor.shape[0] == batch_size:
            return tensor
        missing = batch_size - tf.shape(tensor)[0]
        checked = tf.debugging.assert_non_negative(
            missing,
            message=(
                f"A batch has more rows than the stateful layers' batch size "
                f"{batch_size}. Pass batch_size={batch_size} to fit/evaluate/"
                f"predict, or batch your dataset by {batch_size}."
            ),
        )
        with tf.control_dependencies([checked]):
            paddings = tf.concat(
                [
                    tf.stack([tf.zeros_like(missing), missing])[None],
                    tf.zeros((tensor.shape.rank - 1, 2), dtype=missing.dtype),
                ],
                axis=0,
            )
            padded = tf.pad(tensor, paddings)
        return tf.ensure_shape(padded, [batch_size] + tensor.shape[1:])

    return keras.tree.map_structure(pad, structure)


def fixed_time_length(model):
    """The time length a model's inputs are built for, or None if free.

    Read from `model.inputs` (Sequential and functional models built on
    `keras.Input`); a subclassed model has none, so its length is free.
    """
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        return None
    for tensor in keras.tree.flatten(inputs or []):
        shape = getattr(tensor, "shape", None)
        if shape is not None and len(shape) >= 2 and shape[1] is not None:
            return int(shape[1])
    return None


def output_time_axes(model, x, batch_size, length):
    """Whether a model's outputs follow the input's time axis.

    The model's output spec is computed for inputs of `length` and
    `length + 1` steps: an output whose axis 1 follows the input length is
    per time step (many-to-many); one whose axis 1 does not is many-to-one.
    A model built for a fixed time length T can only be asked about T: an
    output is then per time step when its axis 1 has T entries. Inputs
    whose axis 1 differs from the first input's keep their length.

    Args:
        model: A Keras model.
        x: A (nested) input batch, for dtypes and feature shapes.
        batch_size: Static batch size of the spec, or None.
        length: A time length to try.

    Returns:
        `(has_time, output_spec)`: whether every output is per time step,
        and the output spec for `length` steps.

    Raises:
        InvalidInputError: If some outputs are per time step and some not.
    """

    # Inputs whose axis 1 is not the time axis (e.g. the labels a loss
    # layer takes, of another length) keep their shape.
    time = first_leaf(x).shape[1]

    def spec(steps):
        return keras.tree.map_structure(
            lambda t: None
            if t is None
            else keras.KerasTensor(
                (batch_size, steps if t.shape[1] == time else t.shape[1])
                + tuple(t.shape[2:]),
                dtype=keras.backend.standardize_dtype(t.dtype),
            ),
            x,
        )

    fixed = fixed_time_length(model)
    if fixed is not None:
        length = fixed
        short = model.compute_output_spec(spec(length))
        flags = [
            len(a.shape) >= 2 and a.shape[1] == length
            for a in keras.tree.flatten(short)
        ]
    else:
        short = model.compute_output_spec(spec(length))
        long = model.compute_output_spec(spec(length + 1))
        flags = [
            len(a.shape) >= 2 and a.shape[1] == length and b.shape[1] == length + 1
            for a, b in zip(keras.tree.flatten(short), keras.tree.flatten(long))
        ]
    if any(flags) and not all(flags):
        raise InvalidInputError(
            "keras_gradwatch needs all outputs of a model to be per time "
            "step, or none (many-to-one). Received outputs with shapes "
            f"{[tuple(t.shape) for t in keras.tree.flatten(short)]} for "
            f"inputs of {length} steps."
        )
    return all(flags), short
