"""Private: the optimizer in view: its family, and the learning rate of each step.

`family(optimizer)` says whether clipping bounds the optimizer's step
(`_advice`). `LearningRateReader` reads, after each training step, the
learning rate of the step's (last) update, without touching the training
step (no trace, no change):

- a number (Keras keeps it in a variable, which a callback may assign):
  the variable's value, one read (about 30 µs);
- a `keras.optimizers.schedules.LearningRateSchedule`: the schedule is a
  function of the update count, so its values are evaluated for the next
  `CHUNK` updates at once, in one compiled loop (about 10 µs per update),
  and each step reads the update count and looks its value up. Evaluating
  it eagerly at each step would cost 0.25-0.75 ms (a tenth of a small
  model's step);
- a callable without arguments: called at each step.

The rate recorded is the one of the step's last update: under
`TruncatedBPTT` one step makes one update per window (all with the wrapper's
optimizer, the one that applies them), under `steps_per_execution > 1`
several.
"""

import keras
import numpy as np
import tensorflow as tf

from keras_gradwatch import _advice
from keras_gradwatch import _compat

CHUNK = 1024
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
        self._evaluate = None
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

    def read(self):
        """The learning rate of the latest update (of the next one before
        any), or None when unknown. Never raises."""
        try:
            if self.kind == "variable":
                return float(self._variable.numpy())
            if self.kind == "schedule":
                return self._scheduled()
            if self.kind == "callable":
                return float(np.asarray(keras.ops.convert_to_numpy(self.optimizer.learning_rate)))
        except Exception:  # noqa: BLE001 - never break training: stop reading
            self.kind = None
        return None

    def forget(self):
        """Drops the schedule values evaluated ahead (the schedule changed:
        a rollback scaled it down)."""
        self._values = None

    def _scheduled(self):
        update = max(int(self.optimizer.iterations.numpy()) - 1, 0)
        values = self._values
        if values is None or not self._first <= update < self._first + len(values):
            if self._evaluate is None:
                schedule = self._schedule
                self._evaluate = tf.function(
                    lambda updates: tf.map_fn(
                        lambda u: tf.cast(schedule(u), "float64"), updates,
                        fn_output_signature=tf.float64,
                    ),
                    input_signature=[tf.TensorSpec([None], tf.int64)],
                )
            self._first = update
            values = self._values = self._evaluate(
                tf.range(update, update + CHUNK, dtype=tf.int64)
            ).numpy()
        return float(values[update - self._first])
