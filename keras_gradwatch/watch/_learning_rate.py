"""Private: the optimizer in view: its family, and the learning rate of each step.

`family(optimizer)` says whether clipping bounds the optimizer's step
(`_advice`). `LearningRateReader` reads, after each training step, the
learning rate of the step's (last) update, without touching the training
step (no trace, no change):

- a number (Keras keeps it in a variable, which a callback may assign):
  the variable's value as the step read it after its update
  (`_train_step.StepReadings`, no cost after the step), or one eager read
  (30-200 µs) where the step cannot read it (several replicas, or a
  train step that returns no dict);
- a `keras.optimizers.schedules.LearningRateSchedule`: the schedule is a
  function of the update count, so its values are evaluated for a block of
  coming updates at once, and each step reads the update count and looks
  its value up. Evaluating it at each step would cost 0.25-0.75 ms (a tenth
  of a small model's step). The block is evaluated by calling the schedule
  on a vector of update counts (Keras's schedules are elementwise, except
  `CosineDecay` with a warm-up), checked at its ends against single calls;
  a schedule that cannot take a vector is mapped over it in a compiled loop
  (traced once per reader). Blocks grow from `FIRST_BLOCK` to `LAST_BLOCK`
  updates, so a short fit evaluates few values;
- a callable without arguments: called at each step.

The rate recorded is the one of the step's last update: under
`TruncatedBPTT` one step makes one update per window (all with the wrapper's
optimizer, the one that applies them), under `steps_per_execution > 1`
several.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_gradwatch.core import _compat
from keras_gradwatch.watch import _advice

FIRST_BLOCK = 64
LAST_BLOCK = 4096
# Keras optimizers whose step is set by the learning rate, not by the
# gradient's norm (see `_advice`); those missing from an older Keras are skipped.
ADAPTIVE_OPTIMIZERS = ("Adam", "AdamW", "Adamax", "Nadam", "RMSprop", "Adagrad",
                       "Adadelta", "Adafactor", "Ftrl", "Lamb", "Lion", "Muon")


def family(optimizer):
    """`_advice.ADAPTIVE`, `_advice.SGD` or `_advice.UNKNOWN` for an optimizer
    (a `LossScaleOptimizer` is its inner optimizer's; subclasses count as
    their Keras base class)."""
    inner = getattr(optimizer, "inner_optimizer", optimizer)
    adaptive = tuple(getattr(keras.optimizers, name) for name in ADAPTIVE_OPTIMIZERS
                     if hasattr(keras.optimizers, name))
    if isinstance(inner, adaptive):
        return _advice.ADAPTIVE
    if isinstance(inner, keras.optimizers.SGD):
        return _advice.SGD
    return _advice.UNKNOWN


class LearningRateReader:
    """Reads the learning rate of an optimizer's latest update.

    Args:
        optimizer: The optimizer that applies the updates (a
            `TruncatedBPTT`'s own, `model.optimizer`), or None.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.kind = None  # "variable", "schedule", "callable" or None
        self._variable = None
        self._schedule = None
        self._values = None  # schedule values of updates _first, _first + 1...
        self._first = 0
        self._block = FIRST_BLOCK
        self._mapped = None  # the compiled loop, for schedules that take no vector
        if optimizer is None:
            return
        self._schedule = _compat.learning_rate_schedule(optimizer)
        if self._schedule is not None:
            self.kind = "schedule"
            return
        current = optimizer.learning_rate
        if isinstance(current, keras.Variable):
            self.kind, self._variable = "variable", current
        elif current is not None:
            self.kind = "callable"

    def read(self, readings=None):
        """The learning rate of the latest update (of the next one before
        any), or None when unknown. Never raises.

        Args:
            readings: The step's `_train_step.StepReadings`, when its step
                read the rate (or the update count) itself: then nothing
                is read here.
        """
        try:
            if self.kind == "variable":
                if readings is not None and readings.learning_rate is not None:
                    return readings.learning_rate
                return float(self._variable.numpy())
            if self.kind == "schedule":
                return self._scheduled(readings.iterations if readings is not None else None)
            if self.kind == "callable":
                return float(np.asarray(keras.ops.convert_to_numpy(self.optimizer.learning_rate)))
        except Exception:  # noqa: BLE001 - never break training: stop reading
            self.kind = None
        return None

    def reads(self, optimizer):
        """Whether this reader reads `optimizer`'s learning rate as it is now."""
        if optimizer is not self.optimizer or optimizer is None:
            return False
        if self.kind == "schedule":
            return _compat.learning_rate_schedule(optimizer) is self._schedule
        return self.kind != "variable" or optimizer.learning_rate is self._variable

    def forget(self):
        """Drops the schedule values evaluated ahead (the schedule changed:
        a rollback scaled it down)."""
        self._values = None

    def _scheduled(self, iterations=None):
        if iterations is None:
            iterations = int(self.optimizer.iterations.numpy())
        update = max(iterations - 1, 0)
        values = self._values
        if values is None or not self._first <= update < self._first + len(values):
            self._first = update
            values = self._values = self._evaluate(update, self._block)
            self._block = min(2 * self._block, LAST_BLOCK)
        return float(values[update - self._first])

    def _evaluate(self, first, count):
        """The schedule's values at updates `first` ... `first + count - 1`."""
        updates = tf.range(first, first + count, dtype=tf.int64)
        if self._mapped is None:
            try:
                values = np.asarray(self._schedule(updates), dtype="float64")
                ends = [float(self._schedule(first)), float(self._schedule(first + count - 1))]
                if values.shape == (count,) and np.allclose(values[[0, -1]], ends, rtol=1e-6):
                    return values
            except Exception:  # noqa: BLE001 - a schedule written for one step at a time
                pass
            schedule = self._schedule
            self._mapped = tf.function(
                lambda updates: tf.map_fn(lambda u: tf.cast(schedule(u), "float64"), updates,
                                          fn_output_signature=tf.float64),
                input_signature=[tf.TensorSpec([None], tf.int64)],
            )
        return self._mapped(updates).numpy()
