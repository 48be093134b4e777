"""Private: `fit`, `evaluate`, `predict` and the steps of `TruncatedBPTT`.

`WindowedTraining` is the part of `TruncatedBPTT` that Keras's training
entry points go through: the reset policy's shuffle and resets, the data
checks before any step, the wrapper's own callbacks in front of the user's,
one compiled train function per window, and the steps, handed to
`WindowedSteps` with the `StepSettings` of the moment they are traced.
"""

import keras
import tensorflow as tf

from keras_gradwatch.core import _compat
from keras_gradwatch.core import _train_step
from keras_gradwatch.tbptt import _call_arguments
from keras_gradwatch.tbptt import _layout_checks
from keras_gradwatch.tbptt import _reset_policy
from keras_gradwatch.tbptt import _step_data
from keras_gradwatch.tbptt import _windows


class WindowedTraining:
    """A mixin of `keras.Model` for `TruncatedBPTT` (listed before it).

    The model sets, in its constructor: `_reset_policy` (a
    `ResetPolicy`), `_data_checks` (a `_layout_checks.DataChecks`),
    `_steps` (a `_window_steps.WindowedSteps`), `_auto` (the
    `_auto_window.AutoWindow` callback, or None) and `_train_functions`
    (a dict); and has `window`, `backprop`, `unroll`, `recurrence`,
    `auto_window` and `reset_state()`.
    """

    @property
    def reset(self):
        """`"batch"` or `"epoch"`: when the recurrent state goes back to zero
        (see the class docstring)."""
        return self._reset_policy.mode

    @reset.setter
    def reset(self, value):
        self._reset_policy = _reset_policy.ResetPolicy(value)
        self._data_checks.reset_policy = self._reset_policy

    # fit / evaluate / predict --------------------------------------------

    def fit(self, *args, **kwargs):
        """Trains the model, as `keras.Model.fit`, one update per window.

        Takes `keras.Model.fit`'s arguments. `shuffle` defaults to True with
        `reset="batch"` and to False with `reset="epoch"`, where shuffling
        would mix the streams (an error). `batch_size` defaults to the
        stateful layers' batch size.

        Before any step, the training data and the validation data
        (`validation_data`, `validation_split`, `validation_batch_size`)
        are checked: a batch size above the stateful one; with
        `reset="epoch"`, any other batch size, rows that are not whole
        batches, arrays laid out by `make_streams` for another number of
        streams, a `tf.data.Dataset` of another static batch size; and
        targets that a built-in element-wise loss would broadcast against
        the model's output. Each error names the argument. Data whose shapes
        are unknown (a generator, a dataset of unknown batch size) is not
        checked.

        Raises:
            InvalidInputError: For data that fails these checks, or
                `shuffle=True` with `reset="epoch"`.
        """
        arguments = _call_arguments.bound(keras.Model.fit, self, args, kwargs)
        policy = self._reset_policy
        streamed = isinstance(arguments.get("x"), (tf.data.Dataset, keras.utils.PyDataset))
        arguments["shuffle"] = policy.shuffle(arguments.get("shuffle"), streamed)
        reset = _ResetAtEpochStart(self) if policy.resets_every_epoch else None
        for ours in (reset, self._auto):
            if ours is not None:
                arguments["callbacks"] = _call_arguments.with_callback(
                    self, arguments.get("callbacks"), ours
                )
        # Every piece of data is checked before the first step.
        self._data_checks.fit(arguments)
        return super().fit(**arguments)

    def evaluate(self, x=None, y=None, batch_size=None, **kwargs):
        """Evaluates the model window by window, as `keras.Model.evaluate`.

        The data is checked as `fit`'s `x` and `y` are, before any step.
        """
        self._reset_policy.start_inference(self.reset_state)
        if not _compat.validates_for_fit(kwargs):  # fit checked its validation data
            batch_size = self._data_checks.check(
                _layout_checks.Data("x", x, y, "batch_size", batch_size)
            )
        return super().evaluate(x=x, y=y, batch_size=batch_size, **kwargs)

    def predict(self, x, batch_size=None, **kwargs):
        """Predicts window by window; returns full-length outputs.

        The data is checked as `fit`'s `x` is, before any step.
        """
        self._reset_policy.start_inference(self.reset_state)
        batch_size = self._data_checks.check(
            _layout_checks.Data("x", x, None, "batch_size", batch_size), targets=False
        )
        return super().predict(x, batch_size=batch_size, **kwargs)

    # Steps ----------------------------------------------------------------

    def make_train_function(self, force=False):
        """Keras's train function: one compiled step for every window, or
        one per window used when some layer runs static spans differently.

        Returns a Python function that runs the compiled step of the window
        in use, so that a new window (set between steps) takes effect at the
        next step without retracing the windows seen before.
        """
        if self.train_function is not None and not force:
            return self.train_function
        self._train_functions = {}  # compile() or force: trace anew
        # The step hands GradWatch its loss totals, learning rate and update
        # count; this takes them out of the logs (see `train_step`).
        self.train_function = _train_step.StepReadingsFunction(self._run_train_function)
        return self.train_function

    def _run_train_function(self, iterator):
        if self._auto is not None and self._auto.wants_probe():
            batches = _train_step.next_batches(self, iterator)
            if batches:
                self._auto.take_probe(batches[0], self.distribute_strategy)
                iterator = iter(batches)
        key = self._steps.prepare_train(self._step_settings(), self.distribute_strategy)
        function = self._train_functions.get(key)
        if function is None:
            self._build_optimizer()
            outer = self.train_function
            super().make_train_function(force=True)
            function = self._train_functions[key] = self.train_function
            self.train_function = outer
        return function(iterator)

    def make_test_function(self, force=False):
        """Keras's test function: one compiled step for every window (it
        reads the window in use when it runs)."""
        if self.test_function is None or force:
            super().make_test_function(force=True)
            self.test_function = _SizedFunction(self._set_sizes, self.test_function)
        return self.test_function

    def make_predict_function(self, force=False):
        """Keras's predict function: one compiled step for every window."""
        if self.predict_function is None or force:
            super().make_predict_function(force=True)
            self.predict_function = _SizedFunction(self._set_sizes, self.predict_function)
        return self.predict_function

    def _set_sizes(self):
        """Sets the window the compiled steps read (before each call)."""
        self._steps.sizes.set(self._step_settings().schedule, self.distribute_strategy)

    def _build_optimizer(self):
        """Builds the optimizer before the first step is traced.

        Built inside the trace (as Keras does without a distribution
        strategy), its variables are created there, and `tf.function`
        then traces the whole step a second time, without creating them:
        about half of the first epoch's extra time for a recurrent step.
        """
        if self.optimizer is not None and self.trainable_variables:
            with self.distribute_strategy.scope():
                _train_step.build(self.optimizer, self.trainable_variables)

    def _step_settings(self):
        """What the settings say about the steps traced now."""
        schedule = _windows.WindowSchedule(self.window, self.backprop, self.unroll)
        return _step_data.StepSettings(schedule, self._reset_policy, self.recurrence, self.auto_window)

    def train_step(self, data):
        return _train_step.with_readings(self, self._steps.train_step(data, self._step_settings()))

    def test_step(self, data):
        return self._steps.test_step(data, self._step_settings())

    def predict_step(self, data):
        return self._steps.predict_step(data, self._step_settings())


class _SizedFunction:
    """A compiled `evaluate` or `predict` function that runs with the
    window in use: the sizes its steps read are set before each call, so a
    window set between calls takes effect without a new trace."""

    def __init__(self, set_sizes, function):
        self._set_sizes = set_sizes
        self.function = function

    def __call__(self, *args, **kwargs):
        self._set_sizes()
        return self.function(*args, **kwargs)


class _ResetAtEpochStart(keras.callbacks.Callback):
    """Resets the recurrent state before each epoch (`reset="epoch"`)."""

    def __init__(self, model):
        super().__init__()
        self._wrapper = model

    def on_epoch_begin(self, epoch, logs=None):
        self._wrapper.reset_state()
