"""Lay one long sequence out as parallel streams for `reset="epoch"`.

`TruncatedBPTT(..., reset="epoch")` carries each stateful row's state from
one batch to the next: row i of batch j+1 must continue row i of batch j.
`make_streams` cuts one long sequence (token ids or feature rows) into that
layout, with next-step targets.

The layout, for a sequence `s` of N steps, `batch_size` B and `chunk` K:
the first `B * L + 1` steps are used, `L = (N - 1) // B` rounded down to a
multiple of K; stream i is `s[i * L : (i + 1) * L]` (its targets are the
same steps shifted by one, `s[i * L + 1 : (i + 1) * L + 1]`); stream i's
chunk j (steps `j * K` to `(j + 1) * K` of the stream) is row `j * B + i`
of `x`. So `fit(x, y, batch_size=B, shuffle=False)` gives batch j = chunk
j of every stream, in stream order.
"""

import numpy as np

from keras_gradwatch.errors import InvalidInputError

TARGETS = ("next", None)


def make_streams(sequence, batch_size, chunk=None, targets="next"):
    """Cuts one long sequence into `batch_size` parallel streams.

    Args:
        sequence: Array-like of N steps: token ids `(N,)` or feature rows
            `(N, features...)` (numpy, a list, or a tensor).
        batch_size: Number of parallel streams: the stateful layers' batch
            size.
        chunk: Steps per row (each batch holds one chunk of every stream).
            Default None: the whole stream in one row (one batch per epoch;
            `TruncatedBPTT` still updates once per window inside it).
        targets: `"next"` (default): `y` holds each input's next step. None:
            `x` only (steps `0..N-1` are all inputs), for targets of your
            own laid out the same way.

    Returns:
        `(x, y)` with `targets="next"`, else `x`: arrays of shape
        `(batch_size * chunks, chunk, features...)`.

    Raises:
        InvalidInputError: A non-positive `batch_size` or `chunk`, an
            unknown `targets`, or a sequence too short for one chunk per
            stream.

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch.streams import make_streams
    >>> x, y = make_streams(np.arange(13), batch_size=2, chunk=3)
    >>> x
    array([[ 0,  1,  2],
           [ 6,  7,  8],
           [ 3,  4,  5],
           [ 9, 10, 11]])
    >>> y[0], y[3]
    (array([1, 2, 3]), array([10, 11, 12]))
    """
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
    sequence = np.asarray(sequence)
    if sequence.ndim < 1:
        raise InvalidInputError(
            f"Received a sequence of shape {sequence.shape}. Pass one long "
            "sequence of steps, shaped (N,) or (N, features)."
        )
    usable = len(sequence) - (1 if targets == "next" else 0)
    length = usable // batch_size
    if chunk is not None:
        length -= length % chunk
    if length < 1:
        need = batch_size * (chunk or 1) + (1 if targets == "next" else 0)
        raise InvalidInputError(
            f"Received a sequence of {len(sequence)} steps, too short for "
            f"{batch_size} streams of at least {chunk or 1} step(s): it needs "
            f"at least {need}. Pass a longer sequence or a smaller batch_size/chunk."
        )
    chunk = chunk or length

    def layout(offset):
        streams = sequence[offset : offset + batch_size * length]
        streams = streams.reshape((batch_size, length // chunk, chunk) + sequence.shape[1:])
        # (stream, chunk, step) -> (chunk, stream, step): batch j is chunk j.
        return streams.swapaxes(0, 1).reshape((-1, chunk) + sequence.shape[1:])

    if targets is None:
        return layout(0)
    # Stream i's targets are its steps shifted by one: s[i*L+1 : (i+1)*L+1].
    return layout(0), layout(1)
