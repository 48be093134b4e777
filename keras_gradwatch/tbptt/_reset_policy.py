"""Private: when `TruncatedBPTT` resets the recurrent state, and shuffles.

`reset="batch"`: every batch holds independent sequences, so the state goes
back to zero at the start of every batch (of `fit`, `evaluate` and
`predict`), and `fit` shuffles as Keras does. `reset="epoch"`: row `i` of a
batch continues row `i` of the previous one, so the state carries from
batch to batch and goes back to zero at the start of each epoch and of each
`evaluate`/`predict` call; `fit` must not shuffle (it would mix the
streams), and the data must come in whole batches of streams (the data
checks ask `carries_streams`). Both decisions live here, in one object.
"""

import keras
import tensorflow as tf

from keras_gradwatch.core.errors import InvalidInputError

RESET_MODES = ("batch", "epoch")


class ResetPolicy:
    """The reset and shuffle decisions of one `reset` setting.

    Args:
        mode: `"batch"` or `"epoch"` (see the module docstring).

    Raises:
        InvalidInputError: For another `mode`.

    Example:

    >>> ResetPolicy("epoch").shuffle(None)
    False
    >>> ResetPolicy("batch").resets_every_batch
    True
    """

    def __init__(self, mode):
        if mode not in RESET_MODES:
            raise InvalidInputError(
                f"Received: reset={mode!r}. Pass reset='batch' (independent "
                "sequences in every batch) or reset='epoch' (batches continue "
                "the same streams)."
            )
        self.mode = mode

    @property
    def resets_every_batch(self) -> bool:
        """Whether each step starts from a zero state."""
        return self.mode == "batch"

    @property
    def carries_streams(self) -> bool:
        """Whether row `i` of a batch continues row `i` of the previous one."""
        return self.mode == "epoch"

    def start_step(self, reset_state):
        """At the start of every step (traced into it): resets the state
        with `reset_state()` when batches are independent."""
        if self.resets_every_batch:
            reset_state()

    def start_inference(self, reset_state):
        """At the start of `evaluate` and `predict`: streams start over."""
        if self.carries_streams:
            reset_state()

    def shuffle(self, shuffle, x=None):
        """`fit`'s `shuffle` for the user's value (None: unset).

        Raises:
            InvalidInputError: `shuffle=True` while batches carry streams.
        """
        if self.carries_streams:
            if shuffle:
                raise InvalidInputError(
                    f"Received: shuffle={shuffle!r} with reset='epoch'. In "
                    "epoch mode row i of each batch continues row i of the "
                    "previous batch, and shuffling would mix the streams. "
                    "Pass shuffle=False (the default in this mode), or use "
                    "reset='batch' for independent sequences."
                )
            return False
        if shuffle is None:
            # Keras's default, except where Keras would only warn about it.
            return not isinstance(x, (tf.data.Dataset, keras.utils.PyDataset))
        return shuffle

    def epoch_callback(self, model):
        """The callback `fit` runs first (resetting the state at each epoch
        start while batches carry streams), or None."""
        return _ResetAtEpochStart(model) if self.carries_streams else None


class _ResetAtEpochStart(keras.callbacks.Callback):
    """Resets the recurrent state before each epoch (`reset="epoch"`)."""

    def __init__(self, model):
        super().__init__()
        self._wrapper = model

    def on_epoch_begin(self, epoch, logs=None):
        self._wrapper.reset_state()
