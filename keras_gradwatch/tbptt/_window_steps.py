"""Private: `TruncatedBPTT`'s step functions, window by window.

`TruncatedBPTT` is the Keras model a user builds, compiles and fits;
`WindowedSteps` is what its `train_step`, `test_step` and `predict_step`
run: planning a batch (`_step_data.WindowedBatch`), resetting the state as
the reset policy says, one update per window in one compiled loop (under
`tf.distribute` too) and the TBPTT(k1, k2) re-runs. The wrapper hands each
step its `_step_data.StepSettings` (window schedule, reset policy,
recurrence) when it is traced; the forward-only passes are in
`_forward_windows`, the loss of a window in `_window_loss`, the layers'
recurrence in `_recurrence_switch`.
"""

import functools

import keras
import tensorflow as tf

from keras_gradwatch.core import _batch_plan
from keras_gradwatch.core import _sequence
from keras_gradwatch.core import _state
from keras_gradwatch.core import _train_step
from keras_gradwatch.tbptt import _forward_windows
from keras_gradwatch.tbptt import _recurrence_switch
from keras_gradwatch.tbptt import _step_data
from keras_gradwatch.tbptt import _window_loss
from keras_gradwatch.tbptt import _windows


class WindowedSteps:
    """The step functions of one `TruncatedBPTT`.

    Args:
        wrapper: The `TruncatedBPTT` (its optimizer, loss, metrics and
            state; its settings come with each step).
        skipped_updates: The wrapper's int64 counter variable of updates
            skipped for non-finite gradients.
    """

    def __init__(self, wrapper, skipped_updates):
        self.wrapper = wrapper
        self.inner = wrapper.model
        self.skipped_updates = skipped_updates
        self.recurrence = _recurrence_switch.RecurrenceSwitch(self.inner)
        self.sizes = _windows.WindowVariables()

    def reads_sizes(self, settings):
        """Whether the training step of `settings` reads its window and
        backprop from `sizes`, one step for every window: when no layer
        runs a span of static length differently."""
        schedule = settings.schedule
        return not self.recurrence.static_spans_help(schedule.unroll, settings.recurrence)

    def train_key(self, settings):
        """What the training step of `settings` is kept under (see
        `_windows.WindowSchedule.key`)."""
        schedule = settings.schedule
        return schedule.shared_key if self.reads_sizes(settings) else schedule.key

    def prepare_train(self, settings, strategy):
        """Before a training step runs (eagerly): sets the sizes it reads.

        Returns:
            The step's key (see `train_key`).
        """
        key = self.train_key(settings)
        if key == settings.schedule.shared_key:
            self.sizes.set(settings.schedule, strategy)
        return key

    def paths(self, settings):
        """The path each stateful layer took in the training step of
        `settings`, as traced (empty before)."""
        return self.recurrence.paths.get(self.train_key(settings), {})

    def train_step(self, data, settings):
        """`keras.Model.train_step`: every update of one batch."""
        with self.recurrence.unrolled(False, settings.recurrence):
            wrapper = self.wrapper
            # Before the loop: its variables (and a loss scale) are read there.
            _train_step.build(wrapper.optimizer, wrapper.trainable_variables)
            batch = self._begin_step(data, settings, sized=self.reads_sizes(settings))
            grad_norm = tf.distribute.get_replica_context().merge_call(
                functools.partial(self._fit_windows, batch=batch), args=batch.tensors
            )
            logs = wrapper.get_metrics_result()
            logs["grad_norm"] = grad_norm
            logs["skipped_updates"] = tf.identity(self.skipped_updates.value)
            if settings.log_window:
                logs["window"] = tf.cast(batch.schedule.window, "int64")
            return logs

    def test_step(self, data, settings):
        """`keras.Model.test_step`: the batch's loss and metrics, window by
        window, no update."""
        with self.recurrence.unrolled(False, settings.recurrence):
            batch = self._begin_step(data, settings)

            def evaluate_window(begin, end):
                x = _sequence.slice_time(batch.x, begin, end)
                y_pred = self.inner(x, training=False)
                _window_loss.record_window(
                    self.wrapper,
                    *_window_loss.window_loss(
                        self.wrapper, batch, y_pred, begin, end, training=False
                    ),
                )

            _forward_windows.for_each_window(self.inner, batch, evaluate_window, training=False)
            return self.wrapper.get_metrics_result()

    def predict_step(self, data, settings):
        """`keras.Model.predict_step`: full-length outputs, window by window."""
        with self.recurrence.unrolled(False, settings.recurrence):
            batch = self._begin_step(data, settings, targets=False)
            return _forward_windows.predictions(self.inner, batch)

    def _begin_step(self, data, settings, targets=True, sized=True):
        """What every step does first: check and plan the batch, reset the
        state (as the reset policy says), pad the batch to the stateful
        batch size.

        Returns:
            A `WindowedBatch`, whose window and backprop are read from
            `sizes` (if set, and `sized`), else are the settings' ints.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not targets:  # predict: a dataset's targets, if any, are not used
            y = sample_weight = None
        plan = _batch_plan.plan(self.inner, x, y, settings.schedule.window)
        self.wrapper.built = True
        settings.reset.start_step(self.wrapper.reset_state)
        rows = _sequence.batch_rows(x)
        x = _sequence.pad_rows(x, plan.batch_size)
        schedule = self.sizes.schedule(settings.schedule) if sized else settings.schedule
        return _step_data.WindowedBatch(x, y, sample_weight, rows, plan, schedule)

    # Updates --------------------------------------------------------------

    def _fit_windows(self, strategy, *tensors, batch):
        """Runs every update of a batch (cross-replica context).

        The loop runs in cross-replica context and each window in replica
        context, so that the optimizer's gradient all-reduce and the cond
        that skips non-finite updates work under `tf.distribute`.
        """
        batch = batch.with_tensors(*tensors)
        on_replicas = strategy.extended.call_for_each_replica
        # Every replica's batch has the same time length.
        length = _sequence.time_length(_first_replica(strategy, batch.x))
        count = batch.schedule.count(length)
        first = batch.first_update(count)
        saved = on_replicas(self._states_before, args=(batch.x, batch.schedule, first))
        is_scaled = isinstance(self.wrapper.optimizer, keras.optimizers.LossScaleOptimizer)

        def body(i, saved, largest, worst, skipped, shape):
            norm, grads, saved = on_replicas(
                self._window_gradients,
                args=(batch.tensors, i, saved),
                kwargs={"batch": batch, "shape": shape},
            )
            # The norm is of all-reduced gradients: equal on every replica.
            norm = strategy.experimental_local_results(norm)[0]
            finite = tf.math.is_finite(norm)
            self._apply(strategy, grads, finite, always=is_scaled)
            largest = tf.where(finite, tf.maximum(largest, norm), largest)
            worst = tf.where(finite, worst, norm)
            skipped += tf.cast(tf.logical_not(finite), skipped.dtype)
            return i + 1, saved, largest, worst, skipped

        carried = [saved, tf.constant(0.0), tf.constant(0.0), tf.constant(0, "int64")]
        # One symbolic loop per group of windows whose spans share a shape;
        # one for all when the sizes are tensors (no layer would run a
        # static span differently).
        for begin, stop, shape in batch.schedule.groups(length, first, count):
            _, *carried = tf.while_loop(
                lambda i, *_, stop=stop: i < stop,
                functools.partial(body, shape=shape),
                [tf.convert_to_tensor(begin, "int32")] + carried,
                parallel_iterations=1,
            )
        _, largest, worst, skipped = carried
        self.skipped_updates.assign_add(skipped)
        if is_scaled:
            # Non-finite steps are the loss scale's business, not the model's.
            applied = tf.cast(count - first, skipped.dtype) - skipped
            return tf.where(applied > 0, largest, float("nan"))
        return tf.where(skipped > 0, worst, largest)

    def _states_before(self, x, schedule, first):
        """Advances to the first update's span start; returns saved state."""
        begin = 0 if isinstance(first, int) and first == 0 else first * schedule.window
        span_start = schedule.span_start(begin)
        _forward_windows.advance(self.inner, x, schedule, 0, span_start, training=True)
        if not schedule.reruns:
            return []
        return _state.read(self._state_variables())

    def _window_gradients(self, tensors, i, saved, batch, shape=None):
        """Gradients of window `i` (replica context).

        With a static `shape` (see `_windows.WindowSchedule.groups`), the span has that many
        steps and its recurrence is unrolled.

        Returns the unscaled global norm of the (all-reduced) gradients, the
        local gradients, and the saved state the next window starts from.
        """
        batch = batch.with_tensors(*tensors)
        x, schedule = batch.x, batch.schedule
        length = batch.length()
        begin, end = schedule.bounds(i, length)
        start = schedule.span_start(begin)
        next_saved = self._rerun_from(saved, batch, i, start, end) if saved else []
        optimizer = self.wrapper.optimizer
        span, offset = shape or (None, begin - start)
        with tf.GradientTape() as tape:
            unrolled = self.recurrence.unrolled(shape is not None, auto=schedule.unroll == "auto")
            with unrolled, self.recurrence.recording(schedule.key):
                y_pred = self.inner(
                    _sequence.slice_time(x, start, end, length=span), training=True
                )
            if batch.plan.has_time and saved:
                stop = end - start if shape is None else span
                y_pred = _sequence.slice_time(y_pred, offset, stop)
            loss, window = _window_loss.window_loss(
                self.wrapper, batch, y_pred, begin, end, training=True
            )
            scaled_loss = optimizer.scale_loss(loss)
        _window_loss.record_window(self.wrapper, loss, window)
        grads = tape.gradient(scaled_loss, self.wrapper.trainable_variables)
        return _train_step.global_norm(optimizer, grads), grads, next_saved

    def _rerun_from(self, saved, batch, i, start, end):
        """TBPTT(k1, k2): saves the state where the next span starts, then
        sets the state saved where this span starts (to re-run it).

        Returns the state the next window's span starts from.
        """
        x, schedule = batch.x, batch.schedule
        variables = self._state_variables()
        _state.assign(variables, saved)
        next_start = schedule.span_start(end)
        count = schedule.count(batch.length())

        def advance():
            self.inner(_sequence.slice_time(x, start, next_start), training=True)
            return _state.read(variables)

        next_saved = tf.cond(
            tf.logical_and(next_start > start, i + 1 < count),
            advance,
            lambda: list(saved),
        )
        _state.assign(variables, saved)
        return next_saved

    def _apply(self, strategy, grads, finite, always):
        trainable = self.wrapper.trainable_variables

        def apply():
            strategy.extended.call_for_each_replica(
                lambda grads: self.wrapper.optimizer.apply(grads, trainable),
                args=(grads,),
            )
            return tf.constant(True)

        if always:
            # A LossScaleOptimizer skips non-finite steps itself and lowers
            # its scale, so it must see them.
            apply()
        else:
            tf.cond(finite, apply, lambda: tf.constant(False))

    def _state_variables(self):
        return _state.state_variables(_state.stateful_layers(self.inner))


def _first_replica(strategy, structure):
    """The first replica's part of per-replica values (others pass as is)."""

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return keras.tree.map_structure(local, structure)
