"""Private: the loss and metrics of one window of `TruncatedBPTT`.

Each window's loss is the compiled loss on its own steps (the batch
padding cut off); the loss tracker is weighted by the real rows times the
window's steps (the unmasked ones, with a Keras mask), so that an epoch's
loss is the mean over every step, as Keras's would be over the whole
sequence; the metrics get the window's
steps as rows, to the same end.
"""

import tensorflow as tf

from keras_gradwatch.core import _batch_plan
from keras_gradwatch.core import _compat
from keras_gradwatch.core import _sequence


def window_loss(model, batch, y_pred, begin, end, training):
    """The loss of one window's predictions, batch padding cut off.

    Args:
        model: The compiled `TruncatedBPTT` (its loss).
        batch: The `_step_data.WindowedBatch`.
        y_pred: The window's predictions.
        begin, end: The window's steps.
        training: Whether the loss is for an update.

    Returns:
        The loss, and what `record_window` needs to log the window.
    """
    y_pred = _sequence.take_rows(y_pred, batch.rows)
    y_true, weight, steps = batch.targets(begin, end)
    loss = model.compute_loss(
        x=None, y=y_true, y_pred=y_pred, sample_weight=weight, training=training
    )
    per_step = steps if batch.plan.has_time else None
    return loss, (y_true, y_pred, weight, _entries(y_pred, batch.rows * steps), per_step)


def _entries(y_pred, count):
    """What the window's loss is a mean over: its rows times steps, or,
    with a Keras mask on the predictions, the unmasked entries (Keras's
    losses average over those only, so a window of padding weighs 0)."""
    mask = _compat.keras_mask(_sequence.first_leaf(y_pred))
    return count if mask is None else tf.reduce_sum(tf.cast(mask, "int32"))


def record_window(model, loss, window):
    """Updates the loss tracker (weighted by steps) and the metrics (fed
    the window's steps as rows, so that every step weighs alike)."""
    y_true, y_pred, weight, count, per_step = window
    metric = _compat.loss_tracker(model)
    if metric is not None:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # Keras divides each replica's loss by the replica count.
        metric.update_state(loss * replicas, sample_weight=tf.cast(count, "float32"))
    if per_step is not None:
        y_true, y_pred = _sequence.steps_as_rows((y_true, y_pred), per_step)
        per_sequence = not _batch_plan.weights_have_time(weight)
        weight = _sequence.steps_as_rows(weight, per_step, per_sequence=per_sequence)
    model.compute_metrics(None, y_true, y_pred, weight)
