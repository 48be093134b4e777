"""Private: the random state a measurement leaves exactly as it found it.

A measurement calls the model on the probe batch. Keras layers that draw
random numbers (`Dropout`, recurrent dropout, `GaussianNoise`...) advance
their `keras.random.SeedGenerator` at each call, and a recurrent layer with
dropout does so even in inference. Left advanced, the training steps after
a measurement would draw other masks than without GradWatch, and training
would no longer be the same bit for bit. `preserved(model)` puts the state
back after the measurement.
"""

import contextlib

from keras_gradwatch.core import _compat


@contextlib.contextmanager
def preserved(model):
    """Restores `model`'s seed generator states when the block ends.

    Args:
        model: A Keras model (its nested layers included).

    Example:

    >>> import keras, numpy as np
    >>> model = keras.Sequential([keras.Input((3,)), keras.layers.Dropout(0.5)])
    >>> before = [v.numpy().tolist() for v in model.variables]
    >>> with preserved(model):
    ...     _ = model(np.ones((2, 3)), training=True)
    >>> [v.numpy().tolist() for v in model.variables] == before
    True
    """
    states = _compat.seed_generator_states(model)
    saved = [state.numpy() for state in states]
    try:
        yield
    finally:
        for state, value in zip(states, saved):
            state.assign(value)
