"""Private: the data model of one windowed step of `TruncatedBPTT`.

`StepSettings` is what the wrapper's settings say about the steps traced
now (the window schedule, the reset policy, the recurrence, whether the
window is logged); `WindowedBatch` is one batch of such a step: its
tensors, its plan (`_batch_plan.Plan`, from its static shapes) and its
schedule. The window functions (`_window_steps`, `_forward_windows`,
`_window_loss`) take these instead of reading the wrapper's attributes
back, so what a traced step did is fixed by what it was given.
"""

import dataclasses

from keras_gradwatch.core import _batch_plan
from keras_gradwatch.core import _sequence


@dataclasses.dataclass(frozen=True)
class StepSettings:
    """The wrapper's settings for the steps traced now.

    Attributes:
        schedule: The `_windows.WindowSchedule` (window, backprop, unroll).
        reset: The `_reset_policy.ResetPolicy`.
        recurrence: `"auto"`, `"fused"` or `"stock"` (see `_fused`).
        log_window: Whether the training logs hold the window in use
            (with `window="auto"`).
    """

    schedule: object
    reset: object
    recurrence: str
    log_window: bool = False


@dataclasses.dataclass(frozen=True)
class WindowedBatch:
    """One batch cut into windows.

    Under `tf.distribute` the tensors go through `merge_call` and
    `call_for_each_replica` apart from the rest (`tensors`,
    `with_tensors`): they are per replica, the plan and schedule are not.

    Attributes:
        x: The inputs, padded to the stateful batch size.
        y: The targets, or None.
        sample_weight: The sample weights, or None.
        rows: The number of real rows (the padding is cut off before the
            loss, the metrics and the predictions).
        plan: The batch's `_batch_plan.Plan`.
        schedule: The `_windows.WindowSchedule` it is cut with.
    """

    x: object
    y: object
    sample_weight: object
    rows: object
    plan: object
    schedule: object

    @property
    def tensors(self):
        """`(x, y, sample_weight, rows)`."""
        return (self.x, self.y, self.sample_weight, self.rows)

    def with_tensors(self, x, y, sample_weight, rows):
        """The same batch with other tensors (e.g. one replica's)."""
        return dataclasses.replace(self, x=x, y=y, sample_weight=sample_weight, rows=rows)

    def length(self):
        """The time length: a Python int when static."""
        return _sequence.time_length(self.x)

    def first_update(self, count):
        """The first window with a loss: 0, or the last one when the outputs
        have no time axis (many-to-one)."""
        return 0 if self.plan.has_time else count - 1

    def targets(self, begin, end):
        """Targets, sample weights and step count of the window
        `[begin, end)`'s loss (the whole batch's, many-to-one)."""
        if not self.plan.has_time:
            return self.y, self.sample_weight, 1
        y = _sequence.slice_time(self.y, begin, end)
        sample_weight = self.sample_weight
        if _batch_plan.weights_have_time(sample_weight):
            sample_weight = _sequence.slice_time(sample_weight, begin, end)
        return y, sample_weight, end - begin
