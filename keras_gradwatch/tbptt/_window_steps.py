"""Private: `TruncatedBPTT`'s step functions, window by window.

`TruncatedBPTT` is the Keras model a user builds, compiles and fits;
`WindowedSteps` is what its `train_step`, `test_step` and `predict_step`
run: cutting a batch into windows, carrying the state, one update per
window in one compiled loop (under `tf.distribute` too), the TBPTT(k1, k2)
re-runs, and the loss and metrics of each window. It reads the wrapper's
settings (`window`, `backprop`, `reset`, `unroll`) when a step is traced.
"""

import contextlib
import functools

import keras
import tensorflow as tf

from keras_gradwatch.core import _batch_plan
from keras_gradwatch.core import _compat
from keras_gradwatch.core import _sequence
from keras_gradwatch.core import _state
from keras_gradwatch.core import _train_step
from keras_gradwatch.tbptt import _fused
from keras_gradwatch.tbptt import _windows


class WindowedSteps:
    """The step functions of one `TruncatedBPTT`.

    Args:
        wrapper: The `TruncatedBPTT` (its optimizer, loss, metrics, settings).
        skipped_updates: The wrapper's int64 counter variable of updates
            skipped for non-finite gradients.
    """

    def __init__(self, wrapper, skipped_updates):
        self.wrapper = wrapper
        self.inner = wrapper.model
        self.skipped_updates = skipped_updates
        self._unroll_depth = 0  # nesting of `_unrolled`, across replicas
        self._unroll_saved = ()
        self._fused_layers = ()  # layers running BlockLSTM inside a step
        # While a training window is traced: the path each recurrent
        # layer took, by window ({window: {layer name: path}}).
        self.paths = {}
        self._recording = False

    @property
    def schedule(self):
        """The window schedule of the wrapper's current settings."""
        wrapper = self.wrapper
        return _windows.WindowSchedule(wrapper.window, wrapper.backprop, wrapper.unroll)

    def train_step(self, data):
        """`keras.Model.train_step`: every update of one batch."""
        with self._unrolled(False):
            return self._train_step(data)

    def _begin_step(self, data, targets=True):
        """What every step does first: check and plan the batch, reset the
        state (`reset="batch"`), pad the batch to the stateful batch size.

        Returns:
            `(x, y, sample_weight, rows, plan)`, `rows` the real batch rows.
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if not targets:  # predict: a dataset's targets, if any, are not used
            y = sample_weight = None
        plan = self._plan(x, y, sample_weight)
        if self.wrapper.reset == "batch":
            self.wrapper.reset_state()
        rows = _sequence.batch_rows(x)
        x = _sequence.pad_rows(x, plan.batch_size)
        return x, y, sample_weight, rows, plan

    def _train_step(self, data):
        if not self.wrapper.optimizer.built:
            # Before the loop: its variables (and a loss scale) are read there.
            self.wrapper.optimizer.build(self.wrapper.trainable_variables)
        x, y, sample_weight, rows, plan = self._begin_step(data)
        grad_norm = tf.distribute.get_replica_context().merge_call(
            functools.partial(self._fit_windows, plan=plan),
            args=(x, y, sample_weight, rows),
        )
        logs = self.wrapper.get_metrics_result()
        logs["grad_norm"] = grad_norm
        logs["skipped_updates"] = tf.identity(self.skipped_updates.value)
        if self.wrapper.auto_window:
            logs["window"] = tf.constant(self.wrapper.window, "int64")
        return logs

    def test_step(self, data):
        """`keras.Model.test_step`: the batch's loss and metrics, window by
        window, no update."""
        with self._unrolled(False):
            return self._test_step(data)

    def _test_step(self, data):
        x, y, sample_weight, rows, plan = self._begin_step(data)

        def evaluate_window(begin, end):
            y_pred = self.inner(_sequence.slice_time(x, begin, end), training=False)
            self._record_window(
                *self._window_loss(
                    plan, x, y, sample_weight, y_pred, rows, begin, end, training=False
                )
            )

        self._for_each_window(x, plan, evaluate_window, training=False)
        return self.wrapper.get_metrics_result()

    def predict_step(self, data):
        """`keras.Model.predict_step`: full-length outputs, window by window."""
        with self._unrolled(False):
            return self._predict_step(data)

    def _predict_step(self, data):
        x, _, _, rows, plan = self._begin_step(data, targets=False)
        specs = keras.tree.flatten(plan.output_spec)

        if not plan.has_time:
            outputs = []

            def final_window(begin, end):
                y_pred = self.inner(
                    _sequence.slice_time(x, begin, end), training=False
                )
                outputs.append(_sequence.take_rows(y_pred, rows))

            self._for_each_window(x, plan, final_window, training=False)
            return outputs[0]

        # Time-major TensorArrays, so windows of any length concatenate.
        arrays = [
            tf.TensorArray(
                spec.dtype,
                size=0,
                dynamic_size=True,
                infer_shape=False,
                element_shape=tf.TensorShape(
                    [None, plan.batch_size] + list(spec.shape[2:])
                ),
            )
            for spec in specs
        ]
        length = _sequence.time_length(x)
        count = self.schedule.count(length)

        def body(i, *arrays):
            begin, end = self.schedule.bounds(i, length)
            y_pred = self.inner(
                _sequence.slice_time(x, begin, end), training=False
            )
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
        outputs = [_time_major(array.concat())[:rows] for array in arrays]
        return keras.tree.pack_sequence_as(plan.output_spec, outputs)

    # Windows --------------------------------------------------------------

    def _fit_windows(self, strategy, x, y, sample_weight, rows, plan):
        """Runs every update of a batch (cross-replica context).

        The loop runs in cross-replica context and each window in replica
        context, so that the optimizer's gradient all-reduce and the cond
        that skips non-finite updates work under `tf.distribute`.
        """
        on_replicas = strategy.extended.call_for_each_replica
        # Every replica's batch has the same time length.
        length = _sequence.time_length(_first_replica(strategy, x))
        count = self.schedule.count(length)
        # Many-to-one: only the final window has a loss and an update.
        first = 0 if plan.has_time else count - 1
        saved = on_replicas(self._states_before, args=(x, first))
        is_scaled = isinstance(
            self.wrapper.optimizer, keras.optimizers.LossScaleOptimizer
        )

        def body(i, saved, largest, worst, skipped, shape):
            norm, grads, saved = on_replicas(
                self._window_gradients,
                args=(x, y, sample_weight, rows, i, saved),
                kwargs={"plan": plan, "shape": shape},
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
        # One symbolic loop per group of windows whose spans share a shape.
        for begin, stop, shape in self.schedule.groups(length, first, count):
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

    def _states_before(self, x, first):
        """Advances to the first update's span start; returns saved state."""
        span_start = self.schedule.span_start(first * self.wrapper.window)
        self._advance(x, 0, span_start, training=True)
        if self.wrapper.backprop == self.wrapper.window:
            return []
        return _state.read(self._state_variables())

    @contextlib.contextmanager
    def _unrolled(self, unroll):
        """Sets `unroll` on the stateful layers for the calls made inside,
        and runs the layers chosen for the fused kernel with it.

        The layers' own values come back when the outermost use ends. Under
        `MirroredStrategy` each replica's step runs in its own thread and
        they interleave at `merge_call`: a replica that enters second sees
        the first one's setting, not the layers' own, so it must not restore
        what it saw.
        """
        stateful = self._stateful_layers()
        layers = [layer for layer in stateful if hasattr(layer, "unroll")]
        if self._unroll_depth == 0:
            self._unroll_saved = tuple(layer.unroll for layer in layers)
            self._fused_layers = tuple(
                layer for layer in stateful
                if _fused.planned_path(layer, self.wrapper.recurrence)[0]
            )
            for layer in self._fused_layers:
                _compat.shadow_inner_loop(
                    layer, _fused.fused_inner_loop(layer, self._record_path)
                )
        self._unroll_depth += 1
        previous = [layer.unroll for layer in layers]
        for layer in layers:
            _compat.set_unroll(layer, unroll)
        try:
            yield
        finally:
            self._unroll_depth -= 1
            restore = previous if self._unroll_depth else self._unroll_saved
            for layer, value in zip(layers, restore):
                _compat.set_unroll(layer, value)
            if not self._unroll_depth:
                for layer in self._fused_layers:
                    _compat.unshadow_inner_loop(layer)
                self._fused_layers = ()

    def _record_path(self, layer, fused):
        """Notes the path `layer` took in the training window being traced."""
        if self._recording:
            path = "fused" if fused else ("unrolled" if layer.unroll else "loop")
            self.paths.setdefault(self.wrapper.window, {})[layer.name] = path

    def _window_gradients(
        self, x, y, sample_weight, rows, i, saved, plan, shape=None
    ):
        """Gradients of window `i` (replica context).

        With a static `shape` (see `_windows.WindowSchedule.groups`), the span has that many
        steps and its recurrence is unrolled.

        Returns the unscaled global norm of the (all-reduced) gradients, the
        local gradients, and the saved state the next window starts from.
        """
        length = _sequence.time_length(x)
        begin, end = self.schedule.bounds(i, length)
        start = self.schedule.span_start(begin)
        variables = self._state_variables()
        if saved:
            # TBPTT(k1, k2): save the state where the next span starts, then
            # re-run this span from the state saved where it starts.
            _state.assign(variables, saved)
            next_start = self.schedule.span_start(end)
            count = self.schedule.count(length)

            def advance():
                self.inner(
                    _sequence.slice_time(x, start, next_start), training=True
                )
                return _state.read(variables)

            next_saved = tf.cond(
                tf.logical_and(next_start > start, i + 1 < count),
                advance,
                lambda: list(saved),
            )
            _state.assign(variables, saved)
        else:
            next_saved = []
        trainable = self.wrapper.trainable_variables
        span, offset = shape or (None, begin - start)
        with tf.GradientTape() as tape:
            with self._unrolled(shape is not None):
                self._recording = True
                fused = {id(layer) for layer in self._fused_layers}
                for layer in self._stateful_layers():
                    if id(layer) not in fused:
                        self._record_path(layer, False)
                try:
                    y_pred = self.inner(
                        _sequence.slice_time(x, start, end, length=span),
                        training=True,
                    )
                finally:
                    self._recording = False
            if plan.has_time and saved:
                stop = end - start if shape is None else span
                y_pred = _sequence.slice_time(y_pred, offset, stop)
            loss, window = self._window_loss(
                plan, x, y, sample_weight, y_pred, rows, begin, end, training=True
            )
            scaled_loss = self.wrapper.optimizer.scale_loss(loss)
        self._record_window(loss, window)
        grads = tape.gradient(scaled_loss, trainable)
        return _train_step.global_norm(self.wrapper.optimizer, grads), grads, next_saved

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

    def _for_each_window(self, x, plan, fn, training):
        """Calls `fn(begin, end)` per window (replica context, no update)."""
        length = _sequence.time_length(x)
        count = self.schedule.count(length)
        if not plan.has_time:
            last_begin = (count - 1) * self.wrapper.window
            self._advance(x, 0, last_begin, training=training)
            fn(last_begin, length)
            return

        def body(i):
            fn(*self.schedule.bounds(i, length))
            return (i + 1,)

        tf.while_loop(
            lambda i: i < count, body, [tf.constant(0)], parallel_iterations=1
        )

    def _advance(self, x, start, stop, training):
        """Runs the model over `[start, stop)` window by window, for state."""

        def body(begin):
            end = tf.minimum(begin + self.wrapper.window, stop)
            self.inner(_sequence.slice_time(x, begin, end), training=training)
            return (begin + self.wrapper.window,)

        tf.while_loop(
            lambda begin: begin < stop,
            body,
            [tf.convert_to_tensor(start, "int32")],
            parallel_iterations=1,
        )

    def _window_loss(self, plan, x, y, sample_weight, y_pred, rows, begin, end, training):
        """The loss of one window's predictions, batch padding cut off.

        Returns:
            The loss, and what `_record_window` needs to log the window.
        """
        y_pred = _sequence.take_rows(y_pred, rows)
        y_true, weight, steps = self._targets(plan, x, y, sample_weight, begin, end)
        loss = self.wrapper.compute_loss(
            x=None, y=y_true, y_pred=y_pred, sample_weight=weight, training=training
        )
        return loss, (y_true, y_pred, weight, rows * steps)

    def _record_window(self, loss, window):
        """Updates the loss tracker (weighted by steps) and the metrics."""
        y_true, y_pred, weight, count = window
        self._track_loss(loss, count)
        self.wrapper.compute_metrics(None, y_true, y_pred, weight)

    def _targets(self, plan, x, y, sample_weight, begin, end):
        """Targets, sample weights and step count of one window's loss."""
        if not plan.has_time:
            return y, sample_weight, 1
        y = _sequence.slice_time(y, begin, end)
        if _batch_plan.weights_have_time(sample_weight):
            sample_weight = _sequence.slice_time(sample_weight, begin, end)
        return y, sample_weight, end - begin

    def _track_loss(self, loss, weight):
        metric = _compat.loss_tracker(self.wrapper)
        if metric is not None:
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            # Keras divides each replica's loss by the replica count.
            metric.update_state(loss * replicas, sample_weight=tf.cast(weight, "float32"))

    def _plan(self, x, y, sample_weight):
        plan = _batch_plan.plan(self.inner, x, y, self.wrapper.window)
        self.wrapper.built = True
        return plan

    def _stateful_layers(self):
        return _state.stateful_layers(self.inner)

    def _state_variables(self):
        return _state.state_variables(self._stateful_layers())


def _first_replica(strategy, structure):
    """The first replica's part of per-replica values (others pass as is)."""

    def local(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    return keras.tree.map_structure(local, structure)


def _time_major(t):
    perm = [1, 0] + list(range(2, t.shape.rank))
    return tf.transpose(t, perm)
