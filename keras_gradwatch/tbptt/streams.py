"""Lay one long sequence out as parallel streams for `reset="epoch"`.

`TruncatedBPTT(..., reset="epoch")` carries each stateful row's state from
one batch to the next: row i of batch j+1 must continue row i of batch j.
`make_streams` cuts one long sequence (token ids or feature rows, as an
array or a `tf.data.Dataset` of steps) into that layout, with next-step
targets.

The layout, for a sequence `s` of N steps, `batch_size` B and `chunk` K:
the first `B * L + 1` steps are used, `L = (N - 1) // B` rounded down to a
multiple of K; stream i is `s[i * L : (i + 1) * L]` (its targets are the
same steps shifted by one, `s[i * L + 1 : (i + 1) * L + 1]`); stream i's
chunk j (steps `j * K` to `(j + 1) * K` of the stream) is row `j * B + i`
of `x`. So `fit(x, y, batch_size=B, shuffle=False)` gives batch j = chunk
j of every stream, in stream order. A dataset comes back as a dataset of
those batches.

The arrays come back as `StreamArray`s, numpy arrays that remember the
number of streams they were laid out for, so that `TruncatedBPTT` can
refuse them for a model with another number of streams; a dataset's batches
have that number as their static batch size.
"""

import sys

import numpy as np

from keras_gradwatch.core.errors import InvalidInputError

TARGETS = ("next", None)
ROLES = ("inputs", "targets")

# Steps per block when a dataset is gathered into one tensor: batching all
# of them at once would hold one small tensor per step on the way.
GATHER_BLOCK = 65_536


class StreamArray(np.ndarray):
    """A numpy array laid out by `make_streams`: rows are stream chunks.

    It is a `numpy.ndarray` subclass (every numpy and Keras function takes
    it) that also remembers how many streams it was laid out for: row
    `j * streams + i` is chunk j of stream i. `TruncatedBPTT(...,
    reset="epoch")` reads that number to refuse streams laid out for
    another batch size before any step. Slices and element-wise results
    keep the attributes (`y[..., :1]` is still laid out for the same
    streams); reductions to a single number give a plain numpy scalar, and
    `numpy.asarray(a)` a plain array.

    Args:
        array: The laid-out rows, `(streams * chunks, chunk, features...)`.
        streams: The number of streams (`make_streams`' `batch_size`).
        role: `"inputs"` (the `x` of `make_streams`) or `"targets"` (its
            `y`, the next step of every input feature).

    Attributes:
        streams: The number of streams, or None when unknown.
        role: `"inputs"`, `"targets"`, or None when unknown.

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch.streams import make_streams
    >>> x, y = make_streams(np.arange(13), batch_size=2, chunk=3)
    >>> x.streams, y.role, y[:, :1].streams
    (2, 'targets', 2)
    >>> float(x.sum())
    66.0
    """

    def __new__(cls, array, streams: int, role: str = "inputs"):
        if role not in ROLES:
            raise InvalidInputError(f"Received: role={role!r}. Pass 'inputs' or 'targets'.")
        result = np.asarray(array).view(cls)
        result.streams = streams
        result.role = role
        return result

    def __array_finalize__(self, source):
        # Views, slices and element-wise results inherit the layout.
        self.streams = getattr(source, "streams", None)
        self.role = getattr(source, "role", None)

    def __array_wrap__(self, array, *args, **kwargs):
        # A reduction to one number is no longer laid out in rows.
        if array.ndim == 0:
            return array.view(np.ndarray)[()]
        return super().__array_wrap__(array, *args, **kwargs)

    def __reduce__(self):
        # Pickling (and copy.deepcopy) keeps the layout.
        constructor, arguments, state = super().__reduce__()
        return constructor, arguments, (state, self.streams, self.role)

    def __setstate__(self, state):
        array_state, self.streams, self.role = state
        super().__setstate__(array_state)


def make_streams(sequence, batch_size, chunk=None, targets="next"):
    """Cuts one long sequence into `batch_size` parallel streams.

    A `tf.data.Dataset` of steps is read once, when `make_streams` is
    called: the layout needs the sequence's length, and batch j holds steps
    from all over the sequence. Its cardinality gives the length; when it
    is unknown (e.g. after `filter`), one more pass counts the steps. The
    used steps are then held in memory, as an array's are, and every epoch
    of the returned dataset slices them (a dataset that reshuffles or
    augments on each pass is read once, so each epoch sees the same
    streams).

    Args:
        sequence: The N steps: token ids `(N,)` or feature rows
            `(N, features...)` as an array-like (numpy, a list, or a
            tensor), or a finite `tf.data.Dataset` whose elements are the
            steps in order: scalar token ids or 1-D feature rows.
        batch_size: Number of parallel streams: the stateful layers' batch
            size.
        chunk: Steps per row (each batch holds one chunk of every stream).
            Default None: the whole stream in one row (one batch per epoch;
            `TruncatedBPTT` still updates once per window inside it).
        targets: `"next"` (default): `y` holds each input's next step. None:
            `x` only (steps `0..N-1` are all inputs), for targets of your
            own laid out the same way.

    Returns:
        For an array-like: `(x, y)` with `targets="next"`, else `x`:
        `StreamArray`s (numpy arrays that remember `batch_size` as their
        `streams`) of shape `(batch_size * chunks, chunk, features...)`, to
        fit with `batch_size=batch_size, shuffle=False`. For a dataset: a
        `tf.data.Dataset` of the same batches, one per chunk: `(x, y)`
        pairs (`x` alone with `targets=None`) of static shape
        `(batch_size, chunk, features...)`, with a known cardinality (the
        number of batches); pass it to `fit` as it is.

    Raises:
        InvalidInputError: A non-positive `batch_size` or `chunk`, an
            unknown `targets`, a sequence too short for one chunk per
            stream, an infinite dataset, or a dataset whose elements are
            not single steps of known shape (e.g. chunks made by `batch`:
            `unbatch` them first).

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch.streams import make_streams
    >>> x, y = make_streams(np.arange(13), batch_size=2, chunk=3)
    >>> np.asarray(x)
    array([[ 0,  1,  2],
           [ 6,  7,  8],
           [ 3,  4,  5],
           [ 9, 10, 11]])
    >>> y[0].tolist(), y[3].tolist(), x.streams
    ([1, 2, 3], [10, 11, 12], 2)

    The same steps as a `tf.data.Dataset` give the same batches:

    >>> import tensorflow as tf
    >>> batches = make_streams(tf.data.Dataset.range(13), batch_size=2, chunk=3)
    >>> int(batches.cardinality())
    2
    >>> x, y = next(iter(batches))
    >>> x.numpy(), y.numpy()
    (array([[0, 1, 2],
           [6, 7, 8]]), array([[1, 2, 3],
           [7, 8, 9]]))
    """
    _check_arguments(batch_size, chunk, targets)
    if _is_dataset(sequence):
        return _dataset_streams(sequence, batch_size, chunk, targets)
    sequence = np.asarray(sequence)
    if sequence.ndim < 1:
        raise InvalidInputError(
            f"Received a sequence of shape {sequence.shape}. Pass one long "
            "sequence of steps, shaped (N,) or (N, features)."
        )
    length = _stream_length(len(sequence), batch_size, chunk, targets)
    layouts = [
        # (chunks, streams, step...) -> rows: batch j of `fit` is chunk j.
        StreamArray(np.reshape(layout, (-1,) + layout.shape[2:]), batch_size, role)
        for layout, role in zip(_layouts(np, sequence, batch_size, length, chunk, targets), ROLES)
    ]
    return tuple(layouts) if targets == "next" else layouts[0]


def _check_arguments(batch_size, chunk, targets):
    for value, name in ((batch_size, "batch_size"), (chunk, "chunk")):
        if value is None and name == "chunk":
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInputError(
                f"Received: {name}={value!r}. Pass a positive integer"
                + (" (the stateful layers' batch size)." if name == "batch_size" else " of steps.")
            )
    if targets not in TARGETS:
        raise InvalidInputError(
            f"Received: targets={targets!r}. Pass 'next' (next-step targets) or None (inputs only)."
        )


def _stream_length(steps, batch_size, chunk, targets):
    """L: the steps per stream, a multiple of `chunk`."""
    usable = steps - (1 if targets == "next" else 0)
    length = usable // batch_size
    if chunk is not None:
        length -= length % chunk
    if length < 1:
        need = batch_size * (chunk or 1) + (1 if targets == "next" else 0)
        raise InvalidInputError(
            f"Received a sequence of {steps} steps, too short for "
            f"{batch_size} streams of at least {chunk or 1} step(s): it needs "
            f"at least {need}. Pass a longer sequence or a smaller batch_size/chunk."
        )
    return length


def _layouts(xp, steps, batch_size, length, chunk, targets):
    """The inputs' layout, and the targets' (the same, one step later) with
    `targets="next"`: each `(chunks, batch_size, chunk, features...)`.

    `xp` is numpy, or `tf.experimental.numpy` for a tensor: one layout for
    arrays and datasets, so that both give the same batches.
    """
    chunk = chunk or length
    shape = tuple(steps.shape[1:])

    def layout(offset):
        streams = steps[offset : offset + batch_size * length]
        streams = xp.reshape(streams, (batch_size, length // chunk, chunk) + shape)
        # (stream, chunk, step) -> (chunk, stream, step): batch j is chunk j.
        return xp.swapaxes(streams, 0, 1)

    # Stream i's targets are its steps shifted by one: s[i*L+1 : (i+1)*L+1].
    return [layout(offset) for offset in ((0, 1) if targets == "next" else (0,))]


def _is_dataset(sequence):
    # Only a loaded TensorFlow can have made a Dataset; importing it here
    # would make `import keras_gradwatch` heavy for the records and the CLI.
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(sequence, tf.data.Dataset)


def _dataset_streams(dataset, batch_size, chunk, targets):
    import tensorflow as tf

    _check_step_spec(dataset.element_spec)
    length = _stream_length(_dataset_length(dataset), batch_size, chunk, targets)
    steps = _gather(dataset, batch_size * length + (1 if targets == "next" else 0))
    layouts = _layouts(tf.experimental.numpy, steps, batch_size, length, chunk, targets)
    # Slices along the chunk axis: one element per batch, with static
    # shapes and a known cardinality (Keras counts the epoch's steps).
    return tf.data.Dataset.from_tensor_slices(tuple(layouts) if targets == "next" else layouts[0])


def _check_step_spec(spec):
    import tensorflow as tf

    if not isinstance(spec, tf.TensorSpec):
        raise InvalidInputError(
            f"Received a tf.data.Dataset of elements {spec}. Pass a dataset whose "
            "elements are the steps, each one tensor (a token id or a feature row); "
            "make_streams builds the targets (e.g. `dataset.map(lambda x, y: x)`)."
        )
    if spec.shape.rank is not None and spec.shape.rank >= 2:
        raise InvalidInputError(
            f"Received a tf.data.Dataset of elements shaped {spec.shape}: chunks of "
            "steps, not steps. Pass a dataset of single steps, token ids () or feature "
            "rows (features,): call `.unbatch()` on a dataset of chunks first."
        )
    if not spec.shape.is_fully_defined():
        # A (None,) element is most often a chunk of token ids from
        # `batch(n)`, which would silently be taken for one feature row.
        raise InvalidInputError(
            f"Received a tf.data.Dataset of elements shaped {spec.shape}. Pass a "
            "dataset of single steps of known shape, token ids () or feature rows "
            "(features,): `.unbatch()` a dataset of chunks made by `.batch(n)`, or "
            "set the rows' shape, e.g. `.map(lambda row: tf.ensure_shape(row, (features,)))`."
        )


def _dataset_length(dataset):
    import tensorflow as tf

    steps = int(dataset.cardinality())
    if steps == tf.data.INFINITE_CARDINALITY:
        raise InvalidInputError(
            f"Received an infinite tf.data.Dataset (elements {dataset.element_spec}). "
            "Pass a finite one, e.g. `dataset.take(n)` for its first n steps: the "
            "streams' length depends on the sequence's."
        )
    if steps == tf.data.UNKNOWN_CARDINALITY:
        # Only a pass can tell, e.g. after `filter`; it runs in TensorFlow.
        steps = int(dataset.reduce(np.int64(0), lambda count, _: count + 1))
    return steps


def _gather(dataset, steps):
    """The dataset's first `steps` steps, as one tensor: one pass, in blocks
    (a Python loop over blocks, never over steps)."""
    import tensorflow as tf

    return tf.concat(list(dataset.take(steps).batch(GATHER_BLOCK)), axis=0)
