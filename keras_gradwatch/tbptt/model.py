"""Windowed truncated backpropagation through time (TBPTT) inside `fit`."""

import keras

from keras_gradwatch.core import _batch_plan
from keras_gradwatch.core import _compat
from keras_gradwatch.core import _state
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.tbptt import _auto_window
from keras_gradwatch.tbptt import _call_arguments
from keras_gradwatch.tbptt import _fused
from keras_gradwatch.tbptt import _layout_checks
from keras_gradwatch.tbptt import _reset_policy
from keras_gradwatch.tbptt import _setting_checks
from keras_gradwatch.tbptt import _window_steps
from keras_gradwatch.tbptt import _windows
from keras_gradwatch.tbptt._windowed_training import WindowedTraining

RESET_MODES = _reset_policy.RESET_MODES
AUTO_UNROLL_STEPS = _windows.AUTO_UNROLL_STEPS


@keras.saving.register_keras_serializable(package="keras_gradwatch")
class TruncatedBPTT(WindowedTraining, keras.Model):
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

    With `window="auto"` the wrapper sets the window itself, after Aicher,
    Foti & Fox (2019): during `fit` it measures how the gradient of the loss
    at one step decays with the number of steps back (as `measure` does,
    on the first sequences of the first batch, beyond the window) and uses
    the smallest window whose truncation bias, the share of that gradient
    the window cuts off, is at most `tolerance`. The window starts at
    `max_window`, grows at once when a measurement asks for more, and
    shrinks one size at a time once the first epoch is over, only to sizes
    that cut off at most a tenth of `tolerance` (a dependency the model has
    not learned yet cannot be measured, so moving down is cautious); sizes are
    `min_window`, the powers of two between, and `max_window`. The window in use is
    logged as `window`. The estimate comes from the current weights: it
    cannot see a dependency the model has not begun to learn.

    `window` can also be set between steps or `fit` calls
    (`model.window = 20`). The training step is traced once for every
    window, or, when some layer runs a span of static length differently
    (a fused LSTM, or a SimpleRNN unrolled by `unroll="auto"`; any layer
    with `unroll=True`), once per window used.

    Args:
        model: A Keras model (Sequential, functional or subclassed) with at
            least one recurrent layer with `stateful=True`, built for a fixed
            batch size.
        window: Positive int, the number of time steps per update (k1), or
            `"auto"` (see above).
        backprop: Positive int >= `window`, the number of time steps each
            update back-propagates through (k2). Defaults to `window` (and
            follows it with `window="auto"`).
        reset: `"batch"` (default) resets the recurrent state at the start of
            every batch: each batch holds independent sequences. `"epoch"`
            carries the state from batch to batch (row `i` of a batch
            continues row `i` of the previous batch) and resets it at the
            start of each epoch and of each `evaluate`/`predict`; `fit` then
            does not shuffle, and `shuffle=True` is an error.
        unroll: `"auto"` (default) unrolls the recurrence of each training
            span of a `SimpleRNN` when the batch's time length is static
            and the span is at most 32 steps (its trace is repaid within
            tens of windows), and runs the other layers' loop (unrolling a
            GRU or an LSTM repays its trace only after hundreds of
            windows); `True` unrolls every layer whenever the length is
            static (faster later epochs, more trace time and graph memory:
            seconds per window length); `False` never unrolls. Outputs and
            gradients are the same either way. Applies to the layers that
            do not run the fused kernel.
        recurrence: How the stateful layers run in every step: `"auto"`
            (default) runs each `LSTM` (Keras's or
            `keras_gradwatch.layers`') of at most 96 or at least 256
            units with the default activations, no dropout and no mask as
            one fused op, `tf.raw_ops.BlockLSTM`, for the whole span (no
            step-by-step trace: no tracing cost whatever the window;
            Keras's recurrence is faster in between), and the others
            with Keras's recurrence (unrolled or not, see `unroll`);
            `"fused"` runs every stateful layer fused (an error if one
            cannot); `"stock"` never does. Outputs and gradients are the
            same to float round-off; a call with a mask, and gradient
            measurements (`measure`, `GradWatch`), run Keras's recurrence.
            `summary()` and `recurrence_plan()` show the choice,
            `recurrence_paths` the path traced.
        tolerance: With `window="auto"`: the largest share of the gradient
            the window may cut off, in (0, 1). Defaults to 0.1.
        min_window: With `window="auto"`: the smallest window. Defaults to 2.
        max_window: With `window="auto"`: the largest window, the one
            training starts with. Defaults to 100.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        InvalidInputError: For a bad `window`, `backprop`, `reset`,
            `unroll`, `recurrence` (or `"fused"` for a layer that
            cannot), `tolerance`, `min_window` or `max_window`, or a model
            with no stateful recurrent layer.

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
        self,
        model,
        window,
        backprop=None,
        reset="batch",
        unroll="auto",
        recurrence="auto",
        tolerance=None,
        min_window=None,
        max_window=None,
        **kwargs,
    ):
        _compat.require_tensorflow_backend("TruncatedBPTT")
        if _compat.multi_worker_config():  # fit needs them before any callback
            _compat.fix_multi_worker()
        auto = window == "auto"
        tolerance, min_window, max_window = _setting_checks.check_windows(
            window, backprop, tolerance, min_window, max_window
        )
        reset_policy = _reset_policy.ResetPolicy(reset)
        _setting_checks.check_model(model, unroll)
        _setting_checks.check_recurrence(model, recurrence)
        super().__init__(**kwargs)
        self.model = model
        self._reset_policy = reset_policy
        self.unroll = unroll
        self.recurrence = recurrence
        self.auto_window = auto
        self.tolerance = tolerance
        self.min_window = min_window
        self.max_window = max_window
        # None: the backprop follows the window (and is saved so).
        self._backprop_argument = None if backprop is None else int(backprop)
        self._windows = None
        self.window = max_window if auto else window
        # The compiled training step of each window used so far.
        self._train_functions = {}
        self._auto = (
            _auto_window.AutoWindow(self, tolerance, min_window, max_window) if auto else None
        )
        self._skipped_updates = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="int64",
            trainable=False,
            name="skipped_updates",
        )
        self._steps = _window_steps.WindowedSteps(self, self._skipped_updates)
        self._data_checks = _layout_checks.DataChecks(self, reset_policy)
        # The wrapper owns no layer of its own: it is built when the wrapped
        # model is (a stateful model usually is, from its batch_shape).
        self.built = model.built

    @property
    def window(self):
        """Time steps per update: the window in use (it moves under
        `window="auto"`). Settable between steps and `fit` calls."""
        return self._windows.window

    @window.setter
    def window(self, value):
        value = _setting_checks.check_window(value, self._backprop_argument)
        backprop = self._backprop_argument
        self._windows = _windows.WindowSchedule(
            value, value if backprop is None else backprop, self.unroll
        )

    @property
    def backprop(self):
        """Time steps each update back-propagates through (>= `window`)."""
        return self._windows.backprop

    @property
    def window_decisions(self):
        """With `window="auto"`: what each measurement decided, as dicts of
        `step` (training steps so far), `wanted` (the smallest window within
        tolerance), `window` (the window chosen) and `bias` (the measured
        truncation bias of the window in use before); else an empty list."""
        return list(self._auto.decisions) if self._auto is not None else []

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
        arguments = _call_arguments.bound(keras.Model.summary, self, args, kwargs)
        arguments.setdefault("expand_nested", True)
        super().summary(**arguments)
        window = (
            _auto_window.describe(self.tolerance, self.min_window, self.max_window)
            + f", now {self.window}"
            if self.auto_window
            else self.window
        )
        print_fn = arguments.get("print_fn") or print
        for name, path in self.recurrence_plan().items():
            print_fn(f" Recurrence of {name!r}: {path}")
        print_fn(
            f" Truncated BPTT: window={window}, "
            f"backprop={self.backprop}, reset={self.reset!r}, "
            f"unroll={self.unroll!r}, recurrence={self.recurrence!r} "
            "(non-trainable: the skipped-updates counter)"
        )

    def recurrence_plan(self):
        """How each stateful recurrent layer runs its training windows.

        Returns:
            A dict from layer name to a description: `"fused"` (the fused
            LSTM kernel) or why not, followed, once a training step of the
            current window has been traced, by the path it took (`"fused"`,
            `"unrolled"` or `"loop"`, see `recurrence_paths`).
        """
        # None: one traced step serves every window.
        per_window = not self._steps.reads_sizes(self._step_settings())
        return _fused.recurrence_plan(
            _state.stateful_layers(self.model), self.recurrence,
            self.window if per_window else None, self.recurrence_paths,
        )

    @property
    def recurrence_paths(self):
        """The path each stateful recurrent layer took in the training
        step of the current window, as traced: `"fused"`
        (`tf.raw_ops.BlockLSTM`, one op per span), `"unrolled"` (Keras's
        cell, unrolled over the span's static length) or `"loop"` (Keras's
        `while` loop). Empty until that step is traced."""
        return dict(self._steps.paths(self._step_settings()))

    def get_config(self):
        base_config = super().get_config()
        config = {
            "model": keras.saving.serialize_keras_object(self.model),
            "window": "auto" if self.auto_window else self.window,
            "backprop": self._backprop_argument,
            "reset": self.reset,
            "unroll": self.unroll,
            "recurrence": self.recurrence,
        }
        if self.auto_window:
            config.update(
                tolerance=self.tolerance, min_window=self.min_window, max_window=self.max_window
            )
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

    def _state_variables(self):
        return _state.state_variables(_state.stateful_layers(self.model))

