"""Recurrent layers whose per-step state gradient can be measured.

`SimpleRNN`, `GRU`, `LSTM` and `RNN` are drop-in equivalents of the Keras
layers of the same names: same arguments, same weights, same outputs, and
they work under `TruncatedBPTT` and in `.keras` files. What they add: while
`keras_gradwatch.measure` runs, each adds a zero-valued probe p_t to its
first state h_t inside the recurrence, h_t <- h_t + p_t. Adding zero changes
nothing, and the gradient of the loss with respect to p_t is the total
derivative ∂L/∂h_t: through the layer's outputs and through every later
step of the recurrence. (The gradient with respect to a `return_sequences`
output sees only the direct path to the loss, not the recurrence.)

Outside a measurement, the layers run the stock Keras code path.

`Probe` is an identity layer that marks a tensor to measure, for models
(e.g. subclassed ones) whose stock recurrent layers `measure` cannot find.
"""

import inspect

import keras
from keras import ops

from keras_gradwatch.core import _probing

_PACKAGE = "keras_gradwatch"


class _ProbedCell(keras.layers.Layer):
    """Wraps a cell: splits the probe off the inputs, adds it to the state."""

    def __init__(self, cell, units, **kwargs):
        super().__init__(**kwargs)
        self.cell = cell
        self.units = units
        self.state_size = cell.state_size
        if hasattr(cell, "output_size"):
            self.output_size = cell.output_size
        self._cell_takes_training = (
            "training" in inspect.signature(cell.call).parameters
        )

    def call(self, inputs, states, training=None):
        inputs, probe = inputs[..., : -self.units], inputs[..., -self.units :]
        kwargs = {"training": training} if self._cell_takes_training else {}
        output, new_states = self.cell(inputs, states, **kwargs)
        flat = list(keras.tree.flatten(new_states))
        if output is flat[0]:
            # The output is the state (SimpleRNN, GRU, LSTM's h): probe both,
            # so the gradient takes the direct path and the recurrent one.
            output = output + probe
            flat[0] = output
        else:
            flat[0] = flat[0] + probe
        return output, keras.tree.pack_sequence_as(new_states, flat)


class _ProbedRecurrence:
    """Mixin for `keras.layers.RNN` subclasses: probes the first state."""

    def inner_loop(self, sequences, initial_state, mask, training=False):
        units = keras.tree.flatten(self.cell.state_size)[0]
        probe = _probing.state_probe(self, sequences, units)
        if probe is None:
            return super().inner_loop(
                sequences, initial_state, mask, training=training
            )
        if keras.tree.is_nested(mask):
            mask = mask[0]
        # Keras's own recurrence, run over [inputs, probe] by a cell wrapper,
        # keeps masking, go_backwards, unroll and zero_output_for_mask as is.
        runner = keras.layers.RNN(
            _ProbedCell(self.cell, units, dtype=self.dtype_policy),
            return_sequences=self.return_sequences,
            go_backwards=self.go_backwards,
            unroll=self.unroll,
            zero_output_for_mask=self.zero_output_for_mask,
            dtype=self.dtype_policy,
        )
        sequences = ops.concatenate(
            [ops.cast(sequences, probe.dtype), probe], axis=-1
        )
        return runner.inner_loop(sequences, initial_state, mask, training=training)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SimpleRNN(_ProbedRecurrence, keras.layers.SimpleRNN):
    """`keras.layers.SimpleRNN` whose state gradient `measure` can probe.

    Takes the same arguments as `keras.layers.SimpleRNN` (units, activation,
    initializers, `return_sequences`, `return_state`, `stateful`,
    `go_backwards`, masking...) and, with the same weights, returns the same
    outputs.

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch import layers
    >>> layer = layers.SimpleRNN(4, return_sequences=True)
    >>> layer(np.zeros((2, 5, 3), "float32")).shape
    TensorShape([2, 5, 4])
    """


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GRU(_ProbedRecurrence, keras.layers.GRU):
    """`keras.layers.GRU` whose state gradient `measure` can probe.

    Takes the same arguments as `keras.layers.GRU` and, with the same
    weights, returns the same outputs.

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch import layers
    >>> layers.GRU(4)(np.zeros((2, 5, 3), "float32")).shape
    TensorShape([2, 4])
    """


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LSTM(_ProbedRecurrence, keras.layers.LSTM):
    """`keras.layers.LSTM` whose state gradient `measure` can probe.

    Takes the same arguments as `keras.layers.LSTM` and, with the same
    weights, returns the same outputs. The probed state is the hidden state
    h_t (the layer's output), not the cell state c_t.

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch import layers
    >>> layers.LSTM(4, stateful=True)(np.zeros((2, 5, 3), "float32")).shape
    TensorShape([2, 4])
    """


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RNN(_ProbedRecurrence, keras.layers.RNN):
    """`keras.layers.RNN` around any cell, with a probed first state.

    Takes the same arguments as `keras.layers.RNN`. The probe is added to the
    cell's first state (and to its output when the cell returns its state as
    output, as the Keras cells do).

    Example:

    >>> import numpy as np, keras
    >>> from keras_gradwatch import layers
    >>> layer = layers.RNN(keras.layers.GRUCell(4), return_sequences=True)
    >>> layer(np.zeros((2, 5, 3), "float32")).shape
    TensorShape([2, 5, 4])
    """


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Probe(keras.layers.Layer):
    """Identity layer that marks a tensor for `keras_gradwatch.measure`.

    Place it on a `(batch, time, ...)` tensor, e.g. right before a recurrent
    layer of a subclassed model; `measure` then reports ∂L/∂x_t at that
    tensor under the probe's name. Outside a measurement it returns its
    input unchanged.

    Args:
        **kwargs: Passed to `keras.layers.Layer` (e.g. `name`).

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch import layers
    >>> x = np.ones((2, 5, 3), "float32")
    >>> bool((layers.Probe()(x) == x).numpy().all())
    True
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs):
        return _probing.add_input_probe(self, inputs, "probe")

    def compute_output_shape(self, input_shape):
        return input_shape
