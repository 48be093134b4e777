"""Private: the checks of `TruncatedBPTT`'s settings, when it is built.

`window`, `backprop` and the automatic window's settings, `unroll`,
`recurrence` and the wrapped model; each error names the value received
and the fix. (`reset` is checked by its `ResetPolicy`, the data by
`_layout_checks`.)
"""

import numbers

import keras

from keras_gradwatch.core import _sequence
from keras_gradwatch.core import _state
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.tbptt import _auto_window
from keras_gradwatch.tbptt import _fused


def check_steps(value, name):
    """Checks a number of time steps; returns it as a Python int (a NumPy
    integer, e.g. from `np.arange` or a config, is taken)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise InvalidInputError(
            f"Received: {name}={value!r}. Pass a positive integer number of "
            "time steps."
        )
    return int(value)


def check_windows(window, backprop, tolerance, min_window, max_window):
    """Checks the window arguments; returns the automatic window's settings
    (defaults filled in with `window="auto"`, else all None)."""
    if window == "auto":
        if backprop is not None:
            raise InvalidInputError(
                f"Received: backprop={backprop!r} with window='auto'. The "
                "automatic window sets how far each update reaches: leave "
                "backprop=None, or pass an integer window."
            )
        tolerance, min_window, max_window = _auto_window.check_settings(
            tolerance, min_window, max_window
        )
    else:
        if isinstance(window, str):
            raise InvalidInputError(
                f"Received: window={window!r}. Pass a positive integer "
                "number of time steps, or window='auto'."
            )
        check_steps(window, "window")
        given = {"tolerance": tolerance, "min_window": min_window, "max_window": max_window}
        given = {name: value for name, value in given.items() if value is not None}
        if given:
            raise InvalidInputError(
                f"Received: {', '.join(f'{k}={v!r}' for k, v in given.items())} "
                f"with window={window!r}. These set the automatic window: "
                "pass window='auto', or leave them out."
            )
    if backprop is not None:
        check_steps(backprop, "backprop")
        if backprop < window:
            raise InvalidInputError(
                f"Received: backprop={backprop}, window={window}. Each "
                "update back-propagates through at least its own window: "
                "pass backprop >= window, or leave backprop=None."
            )
    return tolerance, min_window, max_window


def check_recurrence(model, recurrence):
    """Checks `recurrence`; with "fused", that every stateful layer can."""
    if recurrence not in _fused.RECURRENCES:
        raise InvalidInputError(
            f"Received: recurrence={recurrence!r}. Pass 'auto' (the fused "
            "LSTM kernel where it is faster), 'fused' (the fused kernel for "
            "every stateful layer) or 'stock' (Keras's own recurrence)."
        )
    if recurrence != "fused":
        return
    refused = {
        layer.name: _fused.unfused_reason(layer) for layer in _state.stateful_layers(model)
    }
    refused = {name: reason for name, reason in refused.items() if reason}
    if refused:
        listed = "; ".join(f"{name!r}: {reason}" for name, reason in refused.items())
        raise InvalidInputError(
            f"Received: recurrence='fused' for layers that cannot run the "
            f"fused LSTM kernel ({listed}). Pass recurrence='auto' (each "
            "layer that can runs fused, the others Keras's recurrence), or "
            "build those layers as plain LSTMs (default activations, no "
            "dropout)."
        )


def check_model(model, unroll):
    """Checks `unroll` and the wrapped model."""
    if not (isinstance(unroll, bool) or unroll == "auto"):
        raise InvalidInputError(
            f"Received: unroll={unroll!r}. Pass unroll='auto' (unroll "
            "short training spans), True or False."
        )
    if not isinstance(model, keras.Model):
        raise InvalidInputError(
            f"Received: model of type {type(model).__name__}. Pass a "
            "keras.Model (Sequential, functional or subclassed) holding a "
            "stateful recurrent layer."
        )
    _state.stateful_layers(model)
    _state.warn_non_stateful(model)
    fixed = _sequence.fixed_time_length(model)
    if fixed is not None:
        shapes = [tuple(t.shape) for t in keras.tree.flatten(model.inputs)]
        raise InvalidInputError(
            f"Received: a model built for a fixed time length of {fixed} "
            f"steps (input shapes {shapes}). TruncatedBPTT feeds it "
            "windows of `window` steps, so its time axis must be free: "
            "build it on keras.Input(batch_shape=(batch, None, ...))."
        )


def check_window(value, backprop):
    """Checks a window set on a built wrapper against its `backprop`
    argument (None: the backprop follows the window); returns it as an int."""
    value = check_steps(value, "window")
    if backprop is not None and backprop < value:
        raise InvalidInputError(
            f"Received: window={value} with backprop={backprop}. Each "
            "update back-propagates through at least its own window: "
            f"pass a window of at most {backprop}."
        )
    return value
