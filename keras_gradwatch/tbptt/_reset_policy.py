"""Private: when `TruncatedBPTT` resets the recurrent state, and shuffles.

`reset="batch"`: every batch holds independent sequences, so the state goes
back to zero at the start of every batch (of `fit`, `evaluate` and
`predict`), and `fit` shuffles as Keras does. `reset="epoch"`: row `i` of a
batch continues row `i` of the previous one, so the state carries from
batch to batch and goes back to zero at the start of each epoch and of each
`evaluate`/`predict` call; `fit` must not shuffle (it would mix the
streams), and the data must come in whole batches of streams (the data
checks ask `carries_streams`). Both decisions live here, in one object
(it imports no Keras: `fit` asks it, then acts).
"""

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

    def shuffle(self, shuffle, streamed=False):
        """`fit`'s `shuffle` for the user's value (None: unset).

        Args:
            shuffle: The value passed to `fit`, or None.
            streamed: Whether `x` is a `tf.data.Dataset` or a
                `keras.utils.PyDataset` (Keras only warns about shuffling
                those, so it is not turned on for them).

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
            return not streamed  # Keras's default, but where it only warns
        return shuffle

    @property
    def resets_every_epoch(self) -> bool:
        """Whether `fit` resets the state at each epoch start."""
        return self.carries_streams
