"""Private: AutoClip, adaptive gradient clipping inside the compiled step.

Seetharaman, Wichern, Pardo & Le Roux (2020), "AutoClip: Adaptive Gradient
Clipping for Source Separation Networks": clip each update's gradients at
the `percentile`-th percentile of the global gradient norms seen so far.
The norms are kept in a ring buffer of the last `HISTORY` updates (the
paper keeps all of them: with thousands of updates the percentile hardly
moves). The clipping runs inside the compiled training step: it shadows
`optimizer.apply`, so a plain Keras model's update and each window update
of a `TruncatedBPTT` are clipped alike, with the norm of the gradients the
update uses (unscaled under a `LossScaleOptimizer`).

The clipping is a part of the optimizer's `apply` shadow
(`_compat.ApplyShadow`), traced into the training step: `install` forces
the step to be traced again, `remove` does so at the end of `fit` (the next `fit`
traces a step without clipping). `active` is a variable, so that an alert
can switch clipping on without a new trace.

One `AutoClip` per run (`_run_state.RunState.clipper`): a script that calls
`fit(epochs=1)` in a loop with a new `GradWatch` on the same folder each
time clips as one long `fit` would, because the new run restores the norm
history from the folder's step records (`history_from_records`), not from
process memory.
"""

import collections
import math

import numpy as np
import tensorflow as tf

from keras_gradwatch.core import _compat
from keras_gradwatch.core import _train_step

HISTORY = 4096
# The 90th percentile, not the paper's 10th. A norm history of a healthy run
# is roughly stationary over a few hundred updates, so an update's norm is
# above the 90th percentile of the ones before it about one time in ten:
# about 10 % of a healthy run's updates are clipped, each down to a level
# its own run reached often; a spike (GradWatch's detector calls one at
# `spike_factor` x the same 90th percentile) is scaled back to that level.
# The 10th percentile clips about 90 % of the updates of a healthy run (158
# of 170 on a healthy Adam run): a different optimizer, not a safeguard.
DEFAULT_PERCENTILE = 90.0

# AutoClip's part of the optimizer's `ApplyShadow`: after the grad-norm
# reader (order 0), which logs the norm the step computed, unclipped.
PART = "autoclip"
ORDER = 10


def history_from_records(steps, one_update_per_step=True):
    """What an `AutoClip` restores from a run folder's step records.

    Args:
        steps: The step records, oldest first (`records.Run.iter_steps()`).
        one_update_per_step: Whether a step's `grad_norm` is the norm of
            one update (a plain Keras model). A `TruncatedBPTT` step makes
            several updates and logs the norm of them together: no norm
            history can be read from it then.

    Returns:
        `(norms, clipped, active)`: the last `HISTORY` finite norms (oldest
        first; empty when not one update per step), the updates clipped so
        far and whether clipping was on at the last step.
    """
    norms = collections.deque(maxlen=HISTORY)
    clipped, active = 0, False
    for record in steps:
        norm = record.get("grad_norm")
        if one_update_per_step and isinstance(norm, (int, float)) and math.isfinite(norm):
            norms.append(float(norm))
        if record.get("clipped_updates") is not None:
            clipped = int(record["clipped_updates"])
            active = record.get("clip") is not None
    return list(norms), clipped, active


def percentile(values, q):
    """The `q`-th percentile of a 1-D tensor, as `numpy.percentile` (linear).

    Example:

    >>> float(percentile(tf.constant([1.0, 2.0, 3.0, 4.0]), 10.0))
    1.3
    """
    ordered = tf.sort(values)
    count = tf.shape(ordered)[0]
    position = (q / 100.0) * tf.cast(count - 1, "float32")
    low = tf.cast(tf.floor(position), "int32")
    high = tf.minimum(low + 1, count - 1)
    weight = position - tf.cast(low, "float32")
    return ordered[low] + (ordered[high] - ordered[low]) * weight


class AutoClip:
    """Clips every update of one model at a percentile of its norm history.

    Args:
        model: The model whose `optimizer.apply` is shadowed (a
            `TruncatedBPTT` or any Keras model).
        percentile: The percentile of the norms seen so far to clip at
            (0 < percentile <= 100).
        active: Whether clipping starts on (else an alert switches it on;
            the norms are recorded from the start either way).
    """

    def __init__(self, model, percentile=DEFAULT_PERCENTILE, active=True):
        self.model = model
        self.optimizer = model.optimizer
        self.percentile = float(percentile)
        # Under tf.distribute, every replica keeps its own copy, updated in
        # the replica's step: the norm is that of the all-reduced gradient,
        # so the copies stay equal (no synchronisation inside the step); read
        # from outside, a variable is the first replica's copy.
        with model.distribute_strategy.scope():
            def variable(value, name, dtype=None):
                return tf.Variable(
                    value, dtype=dtype, trainable=False, name=name,
                    synchronization=tf.VariableSynchronization.ON_READ,
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
                )

            self.norms = variable(tf.zeros([HISTORY]), "autoclip_norms")
            self.count = variable(0, "autoclip_count", "int64")
            self.active = variable(bool(active), "autoclip_active")
            self.threshold = variable(math.inf, "autoclip_threshold")
            self.clipped = variable(0, "autoclip_clipped", "int64")
        self._installed = False

    def restore(self, norms, clipped, active):
        """Continues a run's clipping from its records (see
        `history_from_records`): the norm history, the clipped count and,
        if it was on, clipping switched on."""
        norms = [float(n) for n in norms][-HISTORY:]
        if norms:
            # As the ring buffer holds them after `len(norms)` updates (the
            # percentile reads them as a set: their order does not matter).
            values = np.zeros(HISTORY, "float32")
            values[: len(norms)] = norms
            self.norms.assign(values)
            self.count.assign(len(norms))
        self.clipped.assign(int(clipped))
        if active:
            self.active.assign(True)

    def install(self):
        """Adds the clipping to `optimizer.apply` (its `ApplyShadow`) and has
        the training step traced again."""
        if self._installed:
            return
        _compat.add_apply_part(self.optimizer, PART, self.clip, ORDER)
        self._installed = True
        self.model.make_train_function(force=True)

    def remove(self):
        """Takes the clipping out of `optimizer.apply`; the next `fit`
        traces a plain step."""
        if not self._installed:
            return
        _compat.remove_apply_part(self.optimizer, PART)
        self._installed = False
        _compat.set_train_function(self.model, None)

    def is_on(self):
        """Whether clipping is on."""
        return bool(self.active.numpy())

    def switch_on(self):
        """Starts clipping (the `"clip"` alert action); returns a sentence
        saying so, for the alert."""
        if self.is_on():
            return "Adaptive clipping is on already."
        self.active.assign(True)
        return (
            f"Adaptive clipping is now on: each update is clipped at the {self.percentile:g}th "
            "percentile of the gradient norms seen so far."
        )

    def clip(self, grads):
        """Graph code: the gradients of one update, clipped (or not)."""
        norm = _train_step.global_norm(self.optimizer, grads)
        seen = tf.minimum(self.count, HISTORY)
        history = self.norms[: tf.cast(seen, "int32")]
        limit = tf.cond(
            seen > 0,
            lambda: percentile(history, self.percentile),
            lambda: tf.constant(math.inf),
        )
        finite = tf.math.is_finite(norm)
        clip = tf.logical_and(self.active, tf.logical_and(finite, norm > limit))
        scale = tf.where(clip, limit / tf.maximum(norm, 1e-30), 1.0)
        self.threshold.assign(tf.where(self.active, limit, math.inf))
        self.clipped.assign_add(tf.cast(clip, "int64"))

        # The unclipped norm, if finite: the percentile is of what the model
        # produces. Written whole and without a branch, so that each
        # replica's step updates its own copies the same way.
        index = tf.cast(self.count % HISTORY, "int32")
        recorded = tf.tensor_scatter_nd_update(
            self.norms, [[index]], [tf.where(finite, norm, 0.0)])
        self.norms.assign(tf.where(finite, recorded, self.norms))
        self.count.assign_add(tf.cast(finite, "int64"))
        return [None if g is None else g * tf.cast(scale, g.dtype) for g in grads]

    def state(self):
        """`(threshold, clipped updates so far)`, for the records; the
        threshold is None while clipping is off or no norm is known."""
        limit = float(self.threshold.numpy())
        return (limit if np.isfinite(limit) else None), int(self.clipped.numpy())
