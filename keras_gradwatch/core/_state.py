"""Private helpers that find a model's recurrent layers and move their state.

A Keras stateful RNN layer keeps its state in non-trainable variables
(`layer.states`) that each call reads at the start and overwrites at the end.
Truncated BPTT saves, restores and resets those variables between windows.
"""

import contextlib
import warnings

import keras
import tensorflow as tf

from keras_gradwatch.core import _compat
from keras_gradwatch.core.errors import InvalidInputError


def recurrent_layers(model):
    """All `keras.layers.RNN` layers of a model, nested ones included."""
    return [
        layer
        for layer in _compat.sublayers(model)
        if isinstance(layer, keras.layers.RNN)
    ]


def stateful_layers(model, owner="TruncatedBPTT"):
    """The stateful recurrent layers whose state carries across windows.

    Args:
        model: A Keras model.
        owner: Name used in messages.

    Returns:
        A list of `keras.layers.RNN` layers with `stateful=True`.

    Raises:
        InvalidInputError: If the model has no stateful recurrent layer, or
            one that cannot carry its state forward in time.
    """
    found = []
    for layer in _compat.sublayers(model):
        if isinstance(layer, keras.layers.Bidirectional) and layer.stateful:
            raise InvalidInputError(
                f"{owner} cannot window the stateful Bidirectional layer "
                f"'{layer.name}': its backward direction needs the future of "
                "the sequence, which a window does not hold. Received: "
                f"layer={layer.name!r} (Bidirectional, stateful=True). Use a "
                "forward-only stateful layer, or train without windows."
            )
        if not isinstance(layer, keras.layers.RNN):
            continue
        if not layer.stateful:
            continue
        if layer.go_backwards:
            raise InvalidInputError(
                f"{owner} cannot window the stateful layer '{layer.name}' "
                "with go_backwards=True: it reads each window from its end, "
                "so no state can carry from one window to the next. "
                f"Received: layer={layer.name!r} (go_backwards=True). Set "
                "go_backwards=False."
            )
        found.append(layer)
    if not found:
        names = [type(layer).__name__ for layer in recurrent_layers(model)]
        raise InvalidInputError(
            f"{owner} needs a model with at least one stateful recurrent "
            f"layer, so that state carries from window to window. Received: "
            f"model {model.name!r} with recurrent layers {names or 'none'}. "
            "Set stateful=True on its recurrent layers (with a fixed batch "
            "size, e.g. keras.Input(batch_shape=(32, None, features))), or "
            "build it from keras_gradwatch.layers."
        )
    return found


def warn_non_stateful(model, owner="TruncatedBPTT"):
    """Warns about recurrent layers that restart from zero in every window."""
    for layer in recurrent_layers(model):
        if not layer.stateful:
            warnings.warn(
                f"{owner}: the recurrent layer '{layer.name}' has "
                "stateful=False, so it starts from a zero state in every "
                "window and its outputs differ from a run over the whole "
                "sequence. Set stateful=True to carry its state.",
                stacklevel=3,
            )


def state_variables(layers):
    """The flat list of state variables of built stateful layers."""
    variables = []
    for layer in layers:
        if layer.states is not None:
            variables.extend(keras.tree.flatten(layer.states))
    return variables


def state_batch_size(layers):
    """The batch size the stateful layers were built for, or None."""
    variables = state_variables(layers)
    return int(variables[0].shape[0]) if variables else None


def read(variables):
    """Current values of state variables, as tensors."""
    return [tf.identity(v.value) for v in variables]


def assign(variables, values):
    """Writes saved values back into state variables."""
    for variable, value in zip(variables, values):
        variable.assign(value)


def reset(variables):
    """Sets state variables to zero."""
    for variable in variables:
        variable.assign(tf.zeros_like(variable.value))


@contextlib.contextmanager
def stateless(model):
    """Runs (traces) a model's stateful recurrent layers as stateless.

    Inside, the layers start from a zero state, take any batch size and
    leave their state variables untouched. Meant for tracing a separate
    function (a measurement): the flag is read when a call is traced.
    """
    layers = [layer for layer in recurrent_layers(model) if layer.stateful]
    for layer in layers:
        _compat.set_stateful(layer, False)
    try:
        yield
    finally:
        for layer in layers:
            _compat.set_stateful(layer, True)
