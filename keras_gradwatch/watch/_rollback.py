"""Private: the `"rollback"` alert action, a rescue from too large a step.

When an alert whose action is `"rollback"` is reported, the model goes back
to the last healthy weights and optimizer state, its learning rate is
lowered (x`FACTOR`), stateful recurrent layers start from a zero state, and
training goes on. It is opt-in: without the action nothing here runs.

Snapshots: copies (host memory) of the model's weights and of the
optimizer's variables (moments, learning rate, loss scale; not the update
count, which keeps counting, so a schedule goes on where it was). One is
taken when the `fit` begins (the state handed in), then after a healthy
step (no alert, a finite loss) every `period` steps, where `period` keeps
their cost under `SHARE` of the training time (`snapshot_period`: every few
steps for a small model, rarely for a large one). Two are kept: the newest (`pending`) and the one before it
(`trusted`). A blow-up shows at the step after the update that caused it
(the loss and gradient of step s are those of the weights after update
s - 1), so the newest snapshot may hold the cause: a rollback restores the
one before it, at least two updates before the alert. Memory: two copies
of the weights and optimizer variables (for Adam, 2 x 3 x the weights).

The learning rate: a number (a Keras variable) is part of the optimizer's
variables, so it comes back at its snapshot value, then is multiplied by
`FACTOR` (the value the previous rollback set, if lower, is: a blow-up that
comes back before a newer snapshot lowers it further). A `LearningRateSchedule` cannot be assigned: when the fit begins
it is wrapped in `ScaledSchedule` (its values times a scale variable at 1,
exactly the same values), and a rollback multiplies the scale. The wrapper
is removed at the end of the fit if no rollback happened; otherwise it
stays, so the model keeps the lowered rate. A callable learning rate cannot
be lowered: refused with an error when the fit begins. The epoch's running
metrics are reset too: they held the blown-up steps (a NaN would stay).

Rollbacks stop once the learning rate would fall below `FLOOR` x its value
when the fit began: the updates would then be a thousandth of the planned
ones, and a blow-up that still comes back is not caused by the step size.
Training then stops.
"""

import collections
import math
import time

import keras
import numpy as np
import tensorflow as tf

from keras_gradwatch.core import _compat
from keras_gradwatch.core import _state
from keras_gradwatch.core import _train_step
from keras_gradwatch.core import _update_ratio
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.watch import _model_facts

FACTOR = 0.1
FLOOR = 1e-3
# Snapshots may cost this share of the training time (as update ratios).
SHARE = _update_ratio.EVERY_STEP_SHARE


@keras.saving.register_keras_serializable(package="keras_gradwatch")
class ScaledSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A learning-rate schedule times a scale (a variable a rollback lowers).

    Args:
        schedule: The schedule wrapped.
        scale: The initial scale.
    """

    def __init__(self, schedule, scale=1.0):
        self.schedule = schedule
        self.scale = tf.Variable(float(scale), trainable=False, dtype="float32",
                                 name="learning_rate_scale")

    def __call__(self, step):
        rate = self.schedule(step)
        return rate * tf.cast(self.scale, rate.dtype)

    def get_config(self):
        return {"schedule": keras.optimizers.schedules.serialize(self.schedule),
                "scale": float(self.scale.numpy())}

    @classmethod
    def from_config(cls, config):
        return cls(keras.optimizers.schedules.deserialize(config["schedule"]), config["scale"])


def snapshot_period(costs, intervals, share=SHARE):
    """Steps between snapshots so that they cost at most `share` of the time.

    Args:
        costs: Seconds of recent snapshots. Their least is the cost: a copy
            is the same work each time, and only other load adds to it.
        intervals: Seconds between recent steps. Their median is a step's time.
        share: The share of the training time snapshots may take.

    Returns:
        The period in steps (1 while nothing is known).

    Example:

    >>> snapshot_period([0.002, 0.00045, 0.0005], [0.004, 0.003, 0.005], share=0.02)
    6
    """
    if not costs or not intervals:
        return 1
    step_seconds = float(np.median(intervals))
    if not step_seconds > 0:
        return 1
    return max(1, math.ceil(min(costs) / (share * step_seconds)))


class Snapshot:
    """Host copies of some variables at a step.

    Args:
        step: The step.
        read: A function returning the variables' values as tensors (one
            compiled call reads them all: a tenth of the time of reading
            each variable on its own for a model of 800,000 values).
    """

    def __init__(self, step, read):
        start = time.perf_counter()
        self.step = step
        self.values = [np.array(value, copy=True) for value in read()]
        self.seconds = time.perf_counter() - start


class Rollback:
    """Snapshots of one model during a `fit`, and the rollback to them.

    Args:
        model: The model being fit (a `TruncatedBPTT` or any Keras model).
        step: The run's step count when the fit begins.
        history: A list the rollbacks are appended to (one dict each:
            `step`, `restored_step`, `learning_rate`, `seconds`), kept
            across fits by the caller.
        factor: What a rollback multiplies the learning rate by.

    Raises:
        InvalidInputError: When the learning rate is a callable (it cannot
            be lowered), or under a strategy with several replicas.
    """

    def __init__(self, model, step, history=None, factor=FACTOR):
        self.model = model
        self.optimizer = model.optimizer
        self.factor = factor
        self.rollbacks = [] if history is None else history
        self._count = 0  # this fit's rollbacks
        replicas = model.distribute_strategy.num_replicas_in_sync
        if replicas > 1:
            raise InvalidInputError(
                f"Received: a rollback action under a tf.distribute strategy with {replicas} "
                "replicas. Rolling back runs on one device for now: pass 'stop' or 'warn'."
            )
        self.schedule = self._scaled_schedule()
        # Built now, so that the first snapshot holds every optimizer variable
        # (the same variables the first update would build).
        _train_step.build(self.optimizer, model.trainable_variables)
        iterations = self.optimizer.iterations
        self.variables = list(_model_facts.inner(model).weights) + [
            v for v in self.optimizer.variables if v is not iterations
        ]
        self.states = _state.state_variables(
            [layer for layer in _state.recurrent_layers(_model_facts.inner(model))
             if layer.stateful]
        )
        variables = self.variables
        self._read = tf.function(lambda: [tf.identity(v.value) for v in variables])
        self._read()  # traced and run once: the first runs cost more than the copy
        self.share = SHARE
        self.first_rate = self.rate()
        self.period = 1
        self.trusted = Snapshot(step, self._read)  # the state handed in
        self.pending = None
        self._since = 0
        self._last_time = None
        self._intervals = collections.deque(maxlen=20)  # seconds between steps
        self._costs = collections.deque(maxlen=5)  # seconds of the latest snapshots
        self._rolled_at = None
        self._lowered = None  # the rate the latest rollback set (a variable rate)

    def _scaled_schedule(self):
        """Wraps a schedule in a `ScaledSchedule` (traced anew); returns it."""
        schedule = _compat.learning_rate_schedule(self.optimizer)
        if schedule is None:
            if not isinstance(self.optimizer.learning_rate, keras.Variable):
                raise InvalidInputError(
                    f"Received: learning_rate={self.optimizer.learning_rate!r} (a callable) "
                    "with a rollback action, which lowers the learning rate. Pass a number "
                    "or a keras.optimizers.schedules.LearningRateSchedule, or another action."
                )
            return None
        if isinstance(schedule, ScaledSchedule):
            return schedule  # from an earlier fit's rollback
        scaled = ScaledSchedule(schedule)
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        _compat.set_learning_rate(inner, scaled)
        self.model.make_train_function(force=True)  # the step reads the wrapper
        return scaled

    def rate(self):
        """The learning rate of the next update (its schedule's times the scale)."""
        return float(np.asarray(keras.ops.convert_to_numpy(self.optimizer.learning_rate)))

    def after_step(self, step, healthy):
        """Called after every step: takes a snapshot when a healthy step
        is due one; an unhealthy step drops the newest (it may hold the cause)."""
        now = time.perf_counter()
        if self._last_time is not None:
            self._intervals.append(now - self._last_time)
        self._last_time = now
        if not healthy:
            self.pending = None
            return
        self._since += 1
        if self._since < self.period:
            return
        if self.pending is not None:
            self.trusted = self.pending
        self.pending = Snapshot(step, self._read)
        self._since = 0
        self._costs.append(self.pending.seconds)
        self.period = snapshot_period(self._costs, self._intervals, self.share)

    def roll_back(self, step):
        """Restores the trusted snapshot and lowers the learning rate.

        Returns:
            `(sentence, stop)`: what was done, and whether training must
            stop instead (the learning rate would fall below `FLOOR` x its
            value at the start).
        """
        if self._rolled_at == step:
            return "(Rolled back at this step already.)", False
        snapshot = self.trusted
        lowered = self._lowered_rate(snapshot)
        if lowered < FLOOR * self.first_rate * (1 - 1e-6):  # float32 rates: not 1e-4 < 1e-4
            return (
                f"Not rolled back again: {len(self.rollbacks)} rollback(s) brought the learning "
                f"rate to {self.rate():.3g}, and one more would take it below {FLOOR:g} x its "
                f"value when training began ({self.first_rate:.3g}), yet training still blows "
                "up: the cause is not the step size. Stopping training."
            ), True
        start = time.perf_counter()
        for variable, value in zip(self.variables, snapshot.values):
            variable.assign(value)
        if self.schedule is not None:
            self.schedule.scale.assign(self.schedule.scale * self.factor)
        else:
            self.optimizer.learning_rate.assign(lowered)
            self._lowered = lowered
        _state.reset(self.states)
        # The epoch's running means hold the blown-up steps (a NaN stays):
        # they start again from here.
        self.model.reset_metrics()
        seconds = time.perf_counter() - start
        self._count += 1
        self.pending = None
        self._since = 0
        self._rolled_at = step
        self.rollbacks.append({"step": step, "restored_step": snapshot.step,
                               "learning_rate": lowered, "seconds": seconds})
        return (
            f"Rolled back to the weights and optimizer state of step {snapshot.step} (the last "
            f"healthy snapshot), with the learning rate lowered {1 / self.factor:g}x to "
            f"{lowered:.3g}" + (" (the schedule scaled)" if self.schedule is not None else "")
            + (", the recurrent state reset" if self.states else "")
            + f"; training goes on (rollback {len(self.rollbacks)})."
        ), False

    def _lowered_rate(self, snapshot):
        """The rate after this rollback: `factor` x the snapshot's (x the
        one the previous rollback set, if lower: a blow-up that comes back
        before a new snapshot lowers it further)."""
        if self.schedule is not None:
            return self.rate() * self.factor
        rate = self.optimizer.learning_rate
        index = next(i for i, v in enumerate(self.variables) if v is rate)
        base = float(snapshot.values[index])
        if self._lowered is not None:
            base = min(base, self._lowered)
        return base * self.factor

    def end(self):
        """At the end of the fit: a schedule never scaled gets unwrapped (the
        next fit traces the plain one); a scaled one stays, with its lower rate."""
        if self.schedule is None or self._count or float(self.schedule.scale.numpy()) != 1.0:
            return
        inner = getattr(self.optimizer, "inner_optimizer", self.optimizer)
        _compat.set_learning_rate(inner, self.schedule.schedule)
        _compat.set_train_function(self.model, None)
