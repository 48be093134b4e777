"""Private: the arguments of the `keras.Model` calls `TruncatedBPTT` changes.

`fit`, `evaluate`, `predict` and `summary` are read by name from Keras's own
signatures (so that the wrapper changes a few of them without copying, and
falling behind, the signatures), and `fit`'s callbacks get the wrapper's
own in front.
"""

import inspect

import keras


def bound(method, model, args, kwargs):
    """The arguments of a call to a `keras.Model` method, by name (only
    those given: the defaults are Keras's business).

    Raises:
        TypeError: Arguments the method does not take, named as the
            wrapper's method.
    """
    try:
        bound_arguments = inspect.signature(method).bind(model, *args, **kwargs)
    except TypeError as error:
        raise TypeError(f"TruncatedBPTT.{method.__name__}(): {error}") from None
    arguments = dict(bound_arguments.arguments)
    del arguments["self"]
    return arguments


def with_callback(model, callbacks, ours):
    """`callbacks` with `ours` first (the user's see its effect)."""
    if isinstance(callbacks, keras.callbacks.CallbackList):
        ours.set_model(model)
        callbacks.callbacks.insert(0, ours)
        return callbacks
    return [ours] + list(callbacks or [])
