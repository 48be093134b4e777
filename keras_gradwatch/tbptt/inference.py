"""Run a trained stateful model with another batch size (e.g. 1, to generate).

A stateful recurrent layer fixes its batch size when it is built: a model
trained on 32 parallel streams takes batches of 32. `with_batch_size`
builds the same model for another batch size and copies the weights, so
that it can run one stream step by step with its state carried from call
to call (text generation, online prediction).
"""

from keras_gradwatch.core.errors import InvalidInputError

# Config keys that hold a batch shape (first entry: the batch size); a
# layer's "build_config" keeps the "input_shape" it was built with.
_BATCH_SHAPE_KEYS = ("batch_shape", "batch_input_shape", "build_input_shape", "input_shape")


def with_batch_size(model, batch_size):
    """The same model, built for `batch_size`, with the same weights.

    Args:
        model: A Keras model with stateful recurrent layers (Sequential or
            functional), or a `TruncatedBPTT` (its wrapped model is used).
        batch_size: The new batch size (a positive integer).

    Returns:
        A new Keras model (not wrapped in `TruncatedBPTT`) whose stateful
        layers start from a zero state; call `layer.reset_state()` on them
        (or `keras_gradwatch.TruncatedBPTT(...).reset_state()`) to start over.

    Raises:
        InvalidInputError: A non-positive `batch_size`, or a model that
            cannot be rebuilt from its config (a subclassed model without
            `get_config`: build it again yourself and copy the weights).

    Example:

    >>> import keras, numpy as np
    >>> from keras_gradwatch import layers
    >>> from keras_gradwatch.inference import with_batch_size
    >>> trained = keras.Sequential([keras.Input(batch_shape=(8, None, 2)),
    ...     layers.LSTM(4, stateful=True), keras.layers.Dense(1)])
    >>> single = with_batch_size(trained, 1)
    >>> single(np.zeros((1, 3, 2), "float32")).shape
    TensorShape([1, 1])
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InvalidInputError(
            f"Received: batch_size={batch_size!r}. Pass a positive integer (1 to generate)."
        )
    # Here Keras is loaded already (there is a model): no cost to import it.
    from keras_gradwatch.core import measurement

    inner, _ = measurement._unwrap(model)
    try:
        config = inner.get_config()
        rebuilt = inner.__class__.from_config(_rebatched(config, batch_size))
    except (NotImplementedError, TypeError, ValueError, KeyError) as error:
        raise InvalidInputError(
            f"Received model '{inner.name}' ({type(inner).__name__}), which cannot "
            f"be rebuilt from its config ({type(error).__name__}: {error}). Build "
            "the model again for the new batch size and copy the weights with "
            "new_model.set_weights(model.get_weights())."
        ) from error
    rebuilt.set_weights(inner.get_weights())
    return rebuilt


def _rebatched(config, batch_size):
    if isinstance(config, dict):
        return {
            key: _with_batch(value, batch_size) if key in _BATCH_SHAPE_KEYS else _rebatched(value, batch_size)
            for key, value in config.items()
        }
    if isinstance(config, list):
        return [_rebatched(value, batch_size) for value in config]
    return config


def _with_batch(shape, batch_size):
    if isinstance(shape, (list, tuple)) and shape and not isinstance(shape[0], (list, tuple, dict)):
        return type(shape)([batch_size, *shape[1:]])
    return _rebatched(shape, batch_size)

