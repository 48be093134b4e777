"""Private: the forward-only passes of `TruncatedBPTT`, window by window.

No gradient and no update: advancing the state over a span (before the
first update of a many-to-one batch, or of a TBPTT(k1, k2) re-run), the
windows of `evaluate`, and `predict`'s full-length outputs. Each takes the
wrapped model and a `_step_data.WindowedBatch` (or its inputs and
schedule), in replica context.
"""

import keras
import tensorflow as tf

from keras_gradwatch.core import _sequence


def advance(inner, x, schedule, start, stop, training):
    """Runs `inner` over `[start, stop)` window by window, for its state."""
    if isinstance(start, int) and isinstance(stop, int) and start >= stop:
        return  # nothing to run: no loop (and no recurrence) to trace
    window = schedule.window

    def body(begin):
        end = tf.minimum(begin + window, stop)
        inner(_sequence.slice_time(x, begin, end), training=training)
        return (begin + window,)

    tf.while_loop(
        lambda begin: begin < stop,
        body,
        [tf.convert_to_tensor(start, "int32")],
        parallel_iterations=1,
    )


def for_each_window(inner, batch, fn, training):
    """Calls `fn(begin, end)` per window with a loss: every window, or
    the last one after advancing to it (many-to-one)."""
    schedule = batch.schedule
    length = batch.length()
    count = schedule.count(length)
    if not batch.plan.has_time:
        last_begin = (count - 1) * schedule.window
        advance(inner, batch.x, schedule, 0, last_begin, training=training)
        fn(last_begin, length)
        return

    def body(i):
        fn(*schedule.bounds(i, length))
        return (i + 1,)

    tf.while_loop(lambda i: i < count, body, [tf.constant(0)], parallel_iterations=1)


def predictions(inner, batch):
    """`predict`'s outputs of one batch: full length (or the final
    window's, many-to-one), batch padding cut off."""
    x, plan, schedule = batch.x, batch.plan, batch.schedule
    if not plan.has_time:
        outputs = []

        def final_window(begin, end):
            y_pred = inner(_sequence.slice_time(x, begin, end), training=False)
            outputs.append(_sequence.take_rows(y_pred, batch.rows))

        for_each_window(inner, batch, final_window, training=False)
        return outputs[0]

    # Time-major TensorArrays, so windows of any length concatenate.
    arrays = [
        tf.TensorArray(
            spec.dtype,
            size=0,
            dynamic_size=True,
            infer_shape=False,
            element_shape=tf.TensorShape([None, plan.batch_size] + list(spec.shape[2:])),
        )
        for spec in keras.tree.flatten(plan.output_spec)
    ]
    length = batch.length()
    count = schedule.count(length)

    def body(i, *arrays):
        begin, end = schedule.bounds(i, length)
        y_pred = inner(_sequence.slice_time(x, begin, end), training=False)
        return (i + 1,) + tuple(
            array.write(i, _time_major(t))
            for array, t in zip(arrays, keras.tree.flatten(y_pred))
        )

    _, *arrays = tf.while_loop(
        lambda i, *_: i < count,
        body,
        [tf.constant(0)] + arrays,
        parallel_iterations=1,
    )
    outputs = [_time_major(array.concat())[: batch.rows] for array in arrays]
    return keras.tree.pack_sequence_as(plan.output_spec, outputs)


def _time_major(t):
    perm = [1, 0] + list(range(2, t.shape.rank))
    return tf.transpose(t, perm)
