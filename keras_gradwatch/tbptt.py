"""Windowed truncated backpropagation through time (TBPTT) inside `fit`."""

import contextlib
import functools
import inspect

import keras
import tensorflow as tf

from keras_gradwatch import _batch_plan
from keras_gradwatch import _compat
from keras_gradwatch import _sequence
from keras_gradwatch import _state
from keras_gradwatch import _train_step
from keras_gradwatch import _windows
from keras_gradwatch.errors import InvalidInputError

RESET_MODES = ("batch", "epoch")
AUTO_UNROLL_STEPS = _windows.AUTO_UNROLL_STEPS


def _check_steps(value, name):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(
            f"Received: {name}={value!r}. Pass a positive integer number of "
            "time steps."
        )



class _ResetAtEpochStart(keras.callbacks.Callback):
    """Resets the recurrent state before each epoch (`reset="epoch"`)."""

    def __init__(self, model):
        super().__init__()
        self._wrapper = model

    def on_epoch_begin(self, epoch, logs=None):
        self._wrapper.reset_state()


@keras.saving.register_keras_serializable(package="keras_gradwatch")
class TruncatedBPTT(keras.Model):
    """Trains a stateful recurrent model with truncated BPTT inside `fit`.

    Each batch `x` of shape `(batch, T, ...)` is cut along axis 1 into
    consecutive windows of `window` steps. The recurrent state carries from
    window to window, the gradient stops at the window edge and the optimizer
    applies one update per window. All windows of a batch run in one compiled
    step, in a symbolic loop, so memory is bounded by the window, not by `T`,
    and the trace does not grow with the number of windows.

    With `backprop > window` this is Williams & Peng's TBPTT(k1, k2), with
    k1 = `window` and k2 = `backprop`: each update back-propagates through the
    `backprop - window` steps before the window as well, re-running that span
    with the current weights from the state saved when the forward pass went
    through its first step; the loss covers only the window's own steps.

    Targets (and sample weights) with a time axis of length T are cut with
    the inputs. When the model's output has no time axis (many-to-one), only
    the final window has a loss and an update; earlier windows only advance
    the state. A batch smaller than the stateful layers' batch size is padded
    for the recurrent state and the padding is cut off before the loss, the
    metrics and the predictions.

    The windows of a batch share one static length (but the last, and the
    first ones when `backprop > window`), so the wrapper can unroll the
    recurrence of each training span, as `keras.layers.RNN(unroll=True)`
    does: the same computation, much faster on CPU for short windows. It
    decides this for its stateful layers (`unroll`); their own `unroll`
    attribute is not used inside its steps.

    `evaluate` and `predict` run window by window as well; `predict` returns
    full-length outputs equal to running the model over the whole sequence.
    Calling the wrapper directly (`wrapper(x)`) runs the wrapped model over
    `x` in one piece.

    The logs of every training step hold `grad_norm`, the global L2 norm of
    the step's gradients (the largest over the step's updates, unscaled when
    a loss-scale optimizer is used), and `skipped_updates`, the number of
    updates skipped so far because their gradients were not finite: such an
    update does not touch the weights.

    Args:
        model: A Keras model (Sequential, functional or subclassed) with at
            least one recurrent layer with `stateful=True`, built for a fixed
            batch size.
        window: Positive int, the number of time steps per update (k1).
        backprop: Positive int >= `window`, the number of time steps each
            update back-propagates through (k2). Defaults to `window`.
        reset: `"batch"` (default) resets the recurrent state at the start of
            every batch: each batch holds independent sequences. `"epoch"`
            carries the state from batch to batch (row `i` of a batch
            continues row `i` of the previous batch) and resets it at the
            start of each epoch and of each `evaluate`/`predict`; `fit` then
            does not shuffle, and `shuffle=True` is an error.
        unroll: `"auto"` (default) unrolls the recurrence of each training
            span when the batch's time length is static and the span is at
            most 100 steps; `True` unrolls whenever the length is static
            (more trace time and graph memory for long spans); `False`
            never unrolls. Outputs and gradients are the same either way.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        InvalidInputError: For a bad `window`, `backprop`, `reset` or
            `unroll`, or a model with no stateful recurrent layer.

    Example:

    >>> import numpy as np, keras
    >>> from keras_gradwatch import TruncatedBPTT
    >>> inner = keras.Sequential([
    ...     keras.Input(batch_shape=(4, None, 1)),
    ...     keras.layers.LSTM(8, stateful=True, return_sequences=True),
    ...     keras.layers.Dense(1),
    ... ])
    >>> model = TruncatedBPTT(inner, window=5)
    >>> model.compile(optimizer="sgd", loss="mse")
    >>> x = np.random.rand(8, 20, 1).astype("float32")
    >>> history = model.fit(x, x, epochs=1, verbose=0)
    >>> sorted(history.history)
    ['grad_norm', 'loss', 'skipped_updates']
    """

    def __init__(
        self, model, window, backprop=None, reset="batch", unroll="auto", **kwargs
    ):
        _compat.require_tensorflow_backend("TruncatedBPTT")
        _check_steps(window, "window")
        if backprop is not None:
            _check_steps(backprop, "backprop")
            if backprop < window:
                raise InvalidInputError(
                    f"Received: backprop={backprop}, window={window}. Each "
                    "update back-propagates through at least its own window: "
                    "pass backprop >= window, or leave backprop=None."
                )
        if reset not in RESET_MODES:
            raise InvalidInputError(
                f"Received: reset={reset!r}. Pass reset='batch' (independent "
                "sequences in every batch) or reset='epoch' (batches continue "
                "the same streams)."
            )
        if not (isinstance(unroll, bool) or unroll == "auto"):
            raise InvalidInputError(
                f"Received: unroll={unroll!r}. Pass unroll='auto' (unroll "
                "short training spans), True or False."
            )
        if not isinstance(model, keras.Model):
            raise InvalidInputError(
                f"Received: model of type {type(model).__name__}. Pass a "
                "keras.Model (Sequential, functional or subclassed) holding a "
                "stateful recurrent layer."
            )
        _state.stateful_layers(model)
        _state.warn_non_stateful(model)
        fixed = _sequence.fixed_time_length(model)
        if fixed is not None:
            shapes = [tuple(t.shape) for t in keras.tree.flatten(model.inputs)]
            raise InvalidInputError(
                f"Received: a model built for a fixed time length of {fixed} "
                f"steps (input shapes {shapes}). TruncatedBPTT feeds it "
                "windows of `window` steps, so its time axis must be free: "
                "build it on keras.Input(batch_shape=(batch, None, ...))."
            )
        super().__init__(**kwargs)
        self.model = model
        self.window = window
        self.backprop = window if backprop is None else backprop
        self.reset = reset
        self.unroll = unroll
        self._windows = _windows.WindowSchedule(self.window, self.backprop, unroll)
        self._unroll_depth = 0  # nesting of `_unrolled`, across replicas
        self._unroll_saved = ()
        self._skipped_updates = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            name="skipped_updates",
        )
        # The wrapper owns no layer of its own: it is built when the wrapped
        # model is (a stateful model usually is, from its batch_shape).
        self.built = model.built

    # Keras plumbing -------------------------------------------------------

    def call(self, inputs, training=None):
        _batch_plan.check_time_axis(inputs)
        return self.model(inputs, training=training)

    def compile(self, *args, jit_compile="auto", **kwargs):
        """Configures the model for training, as `keras.Model.compile`.

        XLA is not used: windows have data-dependent lengths.
        """
        if jit_compile is True:
            raise InvalidInputError(
                "Received: jit_compile=True. TruncatedBPTT cuts batches into "
                "windows of data-dependent length, which XLA cannot compile. "
                "Leave jit_compile at its default."
            )
        super().compile(*args, jit_compile=False, **kwargs)

    def compile_from_config(self, config):
        # Keras skips compile_from_config for models that override compile.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def summary(self, *args, **kwargs):
        """Prints the wrapped model's layers and the windowing settings.

        Takes `keras.Model.summary`'s arguments; `expand_nested` defaults to
        True, so that the wrapped model's layers are listed.
        """
        arguments = _arguments(keras.Model.summary, self, args, kwargs)
        arguments.setdefault("expand_nested", True)
        super().summary(**arguments)
        (arguments.get("print_fn") or print)(
            f" Truncated BPTT: window={self.window}, "
            f"backprop={self.backprop}, reset={self.reset!r}, "
            f"unroll={self.unroll!r} "
            "(non-trainable: the skipped-updates counter)"
        )

    def get_config(self):
        base_config = super().get_config()
        config = {
            "model": keras.saving.serialize_keras_object(self.model),
            "window": self.window,
            "backprop": self.backprop,
            "reset": self.reset,
            "unroll": self.unroll,
        }
        return {**base_config, **config}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        return cls(model, **config)

    def build(self, input_shape=None):
        if not self.model.built and input_shape is not None:
            self.model.build(input_shape)
        self.built = True

    def reset_state(self):
        """Sets the state of every stateful recurrent layer to zero."""
        _state.reset(self._state_variables())

    @property
    def skipped_updates(self):
        """Number of updates skipped because their gradients were not finite."""
        return int(self._skipped_updates.numpy())

    # fit / evaluate / predict --------------------------------------------

    def fit(self, *args, **kwargs):
        """Trains the model, as `keras.Model.fit`, one update per window.

        Takes `keras.Model.fit`'s arguments. `shuffle` defaults to True with
        `reset="batch"` and to False with `reset="epoch"`, where shuffling
        would mix the streams (an error). `batch_size` defaults to the
        stateful layers' batch size.
        """
        arguments = _arguments(keras.Model.fit, self, args, kwargs)
        x = arguments.get("x")
        shuffle = arguments.get("shuffle")
        if self.reset == "epoch":
            if shuffle:
                raise InvalidInputError(
                    f"Received: shuffle={shuffle!r} with reset='epoch'. In "
                    "epoch mode row i of each batch continues row i of the "
                    "previous batch, and shuffling would mix the streams. "
                    "Pass shuffle=False (the default in this mode), or use "
                    "reset='batch' for independent sequences."
                )
            arguments["shuffle"] = False
            arguments["callbacks"] = self._with_epoch_reset(arguments.get("callbacks"))
        elif shuffle is None:
            # Keras's default, except where Keras would only warn about it.
            arguments["shuffle"] = not isinstance(x, (tf.data.Dataset, keras.utils.PyDataset))
        arguments["batch_size"] = self._resolve_batch_size(x, arguments.get("batch_size"))
        validation_data = arguments.get("validation_data")
        if arguments.get("validation_batch_size") is None and validation_data is not None:
            arguments["validation_batch_size"] = self._resolve_batch_size(validation_data, None)
        return super().fit(**arguments)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """Evaluates the model window by window, as `keras.Model.evaluate`."""
        if self.reset == "epoch":
            self.reset_state()
        batch_size = self._resolve_batch_size(x, batch_size)
        return super().evaluate(x=x, y=y, batch_size=batch_size, **kwargs)

    def predict(self, x, batch_size=None, **kwargs):
        """Predicts window by window; returns full-length outputs."""
        if self.reset == "epoch":
            self.reset_state()
        batch_size = self._resolve_batch_size(x, batch_size)
        return super().predict(x, batch_size=batch_size, **kwargs)

    def _with_epoch_reset(self, callbacks):
        reset = _ResetAtEpochStart(self)
        if isinstance(callbacks, keras.callbacks.CallbackList):
            reset.set_model(self)
            callbacks.callbacks.insert(0, reset)
            return callbacks
        return [reset] + list(callbacks or [])

    def _resolve_batch_size(self, x, batch_size):
        return _batch_plan.resolve_batch_size(
            self.model, x, batch_size, self.distribute_strategy.num_replicas_in_sync,
            streams=self.reset == "epoch",
        )

    # Steps ----------------------------------------------------------------

    def train_step(self, data):
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
        if self.reset == "batch":
            self.reset_state()
        rows = _sequence.batch_rows(x)
        x = _sequence.pad_rows(x, plan.batch_size)
        return x, y, sample_weight, rows, plan

    def _train_step(self, data):
        if not self.optimizer.built:
            # Before the loop: its variables (and a loss scale) are read there.
            self.optimizer.build(self.trainable_variables)
        x, y, sample_weight, rows, plan = self._begin_step(data)
        grad_norm = tf.distribute.get_replica_context().merge_call(
            functools.partial(self._fit_windows, plan=plan),
            args=(x, y, sample_weight, rows),
        )
        logs = self.get_metrics_result()
        logs["grad_norm"] = grad_norm
        logs["skipped_updates"] = tf.identity(self._skipped_updates.value)
        return logs

    def test_step(self, data):
        with self._unrolled(False):
            return self._test_step(data)

    def _test_step(self, data):
        x, y, sample_weight, rows, plan = self._begin_step(data)

        def evaluate_window(begin, end):
            y_pred = self.model(_sequence.slice_time(x, begin, end), training=False)
            self._record_window(
                *self._window_loss(
                    plan, x, y, sample_weight, y_pred, rows, begin, end, training=False
                )
            )

        self._for_each_window(x, plan, evaluate_window, training=False)
        return self.get_metrics_result()

    def predict_step(self, data):
        with self._unrolled(False):
            return self._predict_step(data)

    def _predict_step(self, data):
        x, _, _, rows, plan = self._begin_step(data, targets=False)
        specs = keras.tree.flatten(plan.output_spec)

        if not plan.has_time:
            outputs = []

            def final_window(begin, end):
                y_pred = self.model(
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
        count = self._windows.count(length)

        def body(i, *arrays):
            begin, end = self._windows.bounds(i, length)
            y_pred = self.model(
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
        count = self._windows.count(length)
        # Many-to-one: only the final window has a loss and an update.
        first = 0 if plan.has_time else count - 1
        saved = on_replicas(self._states_before, args=(x, first))
        is_scaled = isinstance(
            self.optimizer, keras.optimizers.LossScaleOptimizer
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
        for begin, stop, shape in self._windows.groups(length, first, count):
            _, *carried = tf.while_loop(
                lambda i, *_, stop=stop: i < stop,
                functools.partial(body, shape=shape),
                [tf.convert_to_tensor(begin, "int32")] + carried,
                parallel_iterations=1,
            )
        _, largest, worst, skipped = carried
        self._skipped_updates.assign_add(skipped)
        if is_scaled:
            # Non-finite steps are the loss scale's business, not the model's.
            applied = tf.cast(count - first, skipped.dtype) - skipped
            return tf.where(applied > 0, largest, float("nan"))
        return tf.where(skipped > 0, worst, largest)

    def _states_before(self, x, first):
        """Advances to the first update's span start; returns saved state."""
        span_start = self._windows.span_start(first * self.window)
        self._advance(x, 0, span_start, training=True)
        if self.backprop == self.window:
            return []
        return _state.read(self._state_variables())

    @contextlib.contextmanager
    def _unrolled(self, unroll):
        """Sets `unroll` on the stateful layers for the calls made inside.

        The layers' own values come back when the outermost use ends. Under
        `MirroredStrategy` each replica's step runs in its own thread and
        they interleave at `merge_call`: a replica that enters second sees
        the first one's setting, not the layers' own, so it must not restore
        what it saw.
        """
        layers = [
            layer for layer in self._stateful_layers() if hasattr(layer, "unroll")
        ]
        if self._unroll_depth == 0:
            self._unroll_saved = tuple(layer.unroll for layer in layers)
        self._unroll_depth += 1
        previous = [layer.unroll for layer in layers]
        for layer in layers:
            layer.unroll = unroll
        try:
            yield
        finally:
            self._unroll_depth -= 1
            restore = previous if self._unroll_depth else self._unroll_saved
            for layer, value in zip(layers, restore):
                layer.unroll = value

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
        begin, end = self._windows.bounds(i, length)
        start = self._windows.span_start(begin)
        variables = self._state_variables()
        if saved:
            # TBPTT(k1, k2): save the state where the next span starts, then
            # re-run this span from the state saved where it starts.
            _state.assign(variables, saved)
            next_start = self._windows.span_start(end)
            count = self._windows.count(length)

            def advance():
                self.model(
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
        trainable = self.trainable_variables
        span, offset = shape or (None, begin - start)
        with tf.GradientTape() as tape:
            with self._unrolled(shape is not None):
                y_pred = self.model(
                    _sequence.slice_time(x, start, end, length=span),
                    training=True,
                )
            if plan.has_time and saved:
                stop = end - start if shape is None else span
                y_pred = _sequence.slice_time(y_pred, offset, stop)
            loss, window = self._window_loss(
                plan, x, y, sample_weight, y_pred, rows, begin, end, training=True
            )
            scaled_loss = self.optimizer.scale_loss(loss)
        self._record_window(loss, window)
        grads = tape.gradient(scaled_loss, trainable)
        return _train_step.global_norm(self.optimizer, grads), grads, next_saved

    def _apply(self, strategy, grads, finite, always):
        trainable = self.trainable_variables

        def apply():
            strategy.extended.call_for_each_replica(
                lambda grads: self.optimizer.apply(grads, trainable),
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
        count = self._windows.count(length)
        if not plan.has_time:
            last_begin = (count - 1) * self.window
            self._advance(x, 0, last_begin, training=training)
            fn(last_begin, length)
            return

        def body(i):
            fn(*self._windows.bounds(i, length))
            return (i + 1,)

        tf.while_loop(
            lambda i: i < count, body, [tf.constant(0)], parallel_iterations=1
        )

    def _advance(self, x, start, stop, training):
        """Runs the model over `[start, stop)` window by window, for state."""

        def body(begin):
            end = tf.minimum(begin + self.window, stop)
            self.model(_sequence.slice_time(x, begin, end), training=training)
            return (begin + self.window,)

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
        loss = self.compute_loss(
            x=None, y=y_true, y_pred=y_pred, sample_weight=weight, training=training
        )
        return loss, (y_true, y_pred, weight, rows * steps)

    def _record_window(self, loss, window):
        """Updates the loss tracker (weighted by steps) and the metrics."""
        y_true, y_pred, weight, count = window
        self._track_loss(loss, count)
        self.compute_metrics(None, y_true, y_pred, weight)

    def _targets(self, plan, x, y, sample_weight, begin, end):
        """Targets, sample weights and step count of one window's loss."""
        if not plan.has_time:
            return y, sample_weight, 1
        y = _sequence.slice_time(y, begin, end)
        if _batch_plan.weights_have_time(sample_weight):
            sample_weight = _sequence.slice_time(sample_weight, begin, end)
        return y, sample_weight, end - begin

    def _track_loss(self, loss, weight):
        metric = _compat.loss_tracker(self)
        if metric is not None:
            replicas = tf.distribute.get_strategy().num_replicas_in_sync
            # Keras divides each replica's loss by the replica count.
            metric.update_state(loss * replicas, sample_weight=tf.cast(weight, "float32"))

    def _plan(self, x, y, sample_weight):
        plan = _batch_plan.plan(self.model, x, y, self.window)
        self.built = True
        return plan

    def _stateful_layers(self):
        return _state.stateful_layers(self.model)

    def _state_variables(self):
        return _state.state_variables(self._stateful_layers())


def _arguments(method, model, args, kwargs):
    """The arguments of a call to a `keras.Model` method, by name.

    Read from Keras's own signature, so that the wrapper changes some of
    them without copying (and falling behind) the signature.
    """
    try:
        bound = inspect.signature(method).bind(model, *args, **kwargs)
    except TypeError as error:
        raise TypeError(f"TruncatedBPTT.{method.__name__}(): {error}") from None
    arguments = dict(bound.arguments)
    del arguments["self"]
    return arguments





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
