"""Private: the window schedule of truncated BPTT, in integers.

A sequence of `length` steps is cut into windows of `window` steps (the
last one may be shorter); window `i` covers `[i * window, min((i + 1) *
window, length))`. Its update back-propagates through `backprop >= window`
steps: its span starts `backprop - window` steps before the window (not
before 0). Every function takes Python ints (planning at trace time, when
the length is static) or scalar tensors (inside the compiled loop, when it
is not), and returns the same kind.

The window and backprop themselves may be scalar tensors too
(`WindowVariables`): a step traced so runs every window size, so that a
change of window (`window="auto"`, or set by hand) does not trace anew.
"""

import dataclasses

import tensorflow as tf

# `unroll="auto"` unrolls spans up to this many steps, of the layers that
# `_recurrence_switch.unrolls_when_auto` picks. Tracing an unrolled span
# costs seconds that grow faster than its length (forward and backward of GRU(64) / LSTM(64), TF 2.21
# CPU: about 0.4 s at 20 steps, 1.2-2.2 s at 50, 5 s at 100) for a few ms per
# window; a plain Keras `fit` pays 0.7-1.8 s in its first epoch. Past 32 steps
# the first epoch would pay several times that (docs/benchmarks.md).
AUTO_UNROLL_STEPS = 32
# Each group of equal-shaped windows is traced once; past this many groups
# (long `backprop` against a short `window`) the loop stays symbolic.
MAX_WINDOW_GROUPS = 4


@dataclasses.dataclass(frozen=True)
class WindowSchedule:
    """Where each window and its backprop span begin and end.

    Args:
        window: Steps per window (per update).
        backprop: Steps each update back-propagates through (>= window).
        unroll: `"auto"`, True or False: whether `groups` may give windows
            static span shapes, so that their recurrence can be unrolled.

    Example:

    >>> from keras_gradwatch.tbptt._windows import WindowSchedule
    >>> schedule = WindowSchedule(window=4, backprop=6)
    >>> schedule.count(10), schedule.bounds(2, 10), schedule.span_start(8)
    (3, (8, 10), 6)
    >>> schedule.groups(10, 0, 3)
    [(0, 1, (4, 0)), (1, 2, (6, 2)), (2, 3, (4, 2))]
    """

    window: int
    backprop: int
    unroll: object = "auto"
    # Whether updates re-run the steps before their window (backprop >
    # window): static, so kept when the sizes become tensors.
    reruns: bool = None

    def __post_init__(self):
        if self.reruns is None:
            object.__setattr__(self, "reruns", self.backprop > self.window)

    @property
    def key(self):
        """What a step traced with this schedule is kept under: the window,
        or `shared_key` when the sizes are tensors."""
        return self.window if isinstance(self.window, int) else self.shared_key

    @property
    def shared_key(self):
        """The key of a step that reads its sizes (`WindowVariables`): one
        for every window, but for whether updates re-run."""
        return ("any", self.reruns)

    def count(self, length):
        """Number of windows in `length` steps."""
        return (length + self.window - 1) // self.window

    def bounds(self, i, length):
        """`(begin, end)` of window `i`."""
        begin = i * self.window
        return begin, _minimum(begin + self.window, length)

    def span_start(self, begin):
        """Where the backprop span of a window that begins at `begin` starts."""
        if isinstance(begin, int) and begin == 0:
            return 0  # whatever the sizes: no loop to trace before step 0
        return _maximum(begin - (self.backprop - self.window), 0)

    def groups(self, length, first, count):
        """Splits windows `first..count-1` into groups of one span shape.

        Returns:
            `(begin, stop, shape)` triples: windows `begin <= i < stop` have
            spans of `shape = (span length, window offset in the span)`, or
            one triple with `shape=None` (not unrolled: dynamic shapes) when
            unrolling is off, the length or the window is not static, there
            are more than
            `MAX_WINDOW_GROUPS` shapes, or (with `unroll="auto"`) a span is
            longer than `AUTO_UNROLL_STEPS`.
        """
        whole = [(first, count, None)]
        static = isinstance(length, int) and isinstance(self.window, int)
        if self.unroll is False or not static or count < 1:
            return whole
        groups = []
        for i in range(first, count):
            begin, end = self.bounds(i, length)
            start = self.span_start(begin)
            shape = (end - start, begin - start)
            if groups and groups[-1][2] == shape:
                groups[-1][1] = i + 1
            else:
                groups.append([i, i + 1, shape])
        longest = max(group[2][0] for group in groups)
        if len(groups) > MAX_WINDOW_GROUPS or (self.unroll == "auto" and longest > AUTO_UNROLL_STEPS):
            return whole
        return [tuple(group) for group in groups]


class WindowVariables:
    """The window and backprop of a `TruncatedBPTT`, as variables.

    A training step that reads its sizes from here, rather than from
    Python ints, is traced once for every window: when no layer runs a
    span of static length differently (see
    `_recurrence_switch.RecurrenceSwitch.static_spans_help`).
    Not tracked by Keras: the model's weights and saved files are those
    of a model without them.
    """

    def __init__(self):
        self._variables = None
        self._values = None

    def set(self, schedule, strategy):
        """Sets the sizes of `schedule` (eagerly, before a step runs)."""
        values = (schedule.window, schedule.backprop)
        if self._variables is None:
            # Created as the optimizer's are, under the model's strategy.
            with strategy.scope():
                self._variables = tuple(
                    tf.Variable(value, dtype="int32", trainable=False) for value in values
                )
        elif values != self._values:
            for variable, value in zip(self._variables, values):
                variable.assign(value)
        self._values = values

    def schedule(self, schedule):
        """`schedule` with tensor sizes read from the variables (in a
        step), or `schedule` itself before `set` has made them."""
        if self._variables is None:
            return schedule
        window, backprop = (tf.convert_to_tensor(v) for v in self._variables)
        return dataclasses.replace(schedule, window=window, backprop=backprop)


def _minimum(a, b):
    return min(a, b) if isinstance(a, int) and isinstance(b, int) else tf.minimum(a, b)


def _maximum(a, b):
    return max(a, b) if isinstance(a, int) and isinstance(b, int) else tf.maximum(a, b)

