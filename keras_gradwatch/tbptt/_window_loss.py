"""Private: the loss and metrics of one window of `TruncatedBPTT`.

Each window's loss is the compiled loss on its own steps (the batch
padding cut off); the loss tracker is weighted by the real rows times the
window's steps, so that an epoch's loss is the mean over every step, as
Keras's would be over the whole sequence.
"""

import tensorflow as tf

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
    return loss, (y_true, y_pred, weight, batch.rows * steps)


def record_window(model, loss, window):
    """Updates the loss tracker (weighted by steps) and the metrics."""
    y_true, y_pred, weight, count = window
    metric = _compat.loss_tracker(model)
    if metric is not None:
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        # Keras divides each replica's loss by the replica count.
        metric.update_state(loss * replicas, sample_weight=tf.cast(count, "float32"))
    model.compute_metrics(None, y_true, y_pred, weight)
