"""`GradWatch`: the Keras callback that watches gradients during `fit`."""

import contextlib
import math
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from keras_gradwatch import _tensorboard
from keras_gradwatch import alerts as alerts_lib
from keras_gradwatch import measurement
from keras_gradwatch import records
from keras_gradwatch import stats
from keras_gradwatch.errors import GradientAlertError
from keras_gradwatch.errors import InvalidInputError
from keras_gradwatch.errors import RunDirectoryError

FLUSH_SECONDS = 1.0
PLOT_MODES = ("end", "epoch", None)


def _positive(value, name, integer=False):
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise InvalidInputError(f"Received: {name}={value!r}. Pass {what}.")


def _finite(value):
    return value is not None and math.isfinite(value)


class GradWatch(keras.callbacks.Callback):
    """Watches gradients during `fit`: measures, alerts, keeps run records.

    Attach it to any Keras model (Sequential, functional or subclassed,
    recurrent or feed-forward) or to a `TruncatedBPTT` model:
    `model.fit(..., callbacks=[GradWatch("runs/exp1")])`. It needs nothing
    else: it takes its probe batch from the first training batch (or from
    `probe_data`).

    What it does:

    - at every step, cheap checks of the logs: a non-finite loss, a loss
      jump, and on `TruncatedBPTT` models the step's `grad_norm` and
      `skipped_updates`;
    - every so often (`every` steps; by default as often as keeps its time
      within `overhead` of the training time, the first time before the
      first update), a measurement on the probe batch: global and per-layer
      gradient norms, and for recurrent layers the profile ‖∂L/∂h_t‖ against
      steps back from the loss with its statistics (see
      `keras_gradwatch.measure`);
    - alerts (`"nonfinite"`, `"exploding"`, `"vanishing"`) with a concrete
      suggestion, acted on per kind, rate-limited (see
      `keras_gradwatch.alerts`);
    - run records in `log_dir` (see `keras_gradwatch.records`); at each
      epoch end it adds `decay_rate` and `horizon` (of the measured layer
      with the shortest horizon) to the logs, and `grad_norm` for models
      that do not log it themselves.

    It changes nothing in training: weights after `fit` are the same with or
    without it. Reused over several `fit` calls, it continues one run, with a
    continuing step count; a `log_dir` holding an earlier run is continued,
    never overwritten.

    Args:
        log_dir: Run folder (created; an unwritable folder is an error at
            train begin, before any step).
        every: Measure every `every` steps. Default None: measure before the
            first update, then whenever the callback's total time (its
            checks, measurements and, reserved ahead, the final drawing of
            the plots) stays within `overhead` of the time spent in `fit`.
        overhead: Share of training time measurements may take when
            `every=None` (default 0.03).
        probe_data: `(x, y)` or `x` to measure on, instead of the first
            training batch.
        loss: Loss of the measurements; defaults to the compiled loss.
        loss_steps: `"last"` (default) or `"all"`, see `measure`.
        nonfinite: Action on NaN/Inf: `"stop"` (default), `"warn"`,
            `"raise"` or a callable taking the `Alert`.
        exploding: Action on exploding gradients (default `"warn"`).
        vanishing: Action on vanishing gradients (default `"warn"`).
        spike_factor: A norm (or loss) above `spike_factor` times the
            median of recent ones is a spike (default 10).
        warmup: Number of values a rolling median needs before spikes
            against it count (default 5).
        max_grad_norm: Optional hard ceiling on the gradient norm.
        max_decay_rate: A profile whose decay rate, over all lags or over
            the far quarter (`stats.tail_decay_rate`), exceeds this grows going
            back in time: exploding (default 1.05).
        vanishing_fraction: A profile whose far end holds less than this
            fraction of the gradient at lag 0 is vanishing (default 1e-3).
            The far end is the profile's last lag, or on `TruncatedBPTT`
            models the last lag within `backprop`.
        vanishing_patience: Vanishing is reported when it holds at this
            many consecutive measurements (default 3), not counting the one
            made before the first update: a vanishing gradient is a lasting
            condition, and a freshly initialised network (an LSTM included)
            often starts with one and learns its way out.
        threshold: Relative threshold of the `horizon` statistic.
        tolerance: Tolerance of the `suggested_window` statistic.
        plots: `"end"` (default): draw the PNG plots and `report.html` into
            `log_dir` at the end of training (also after an interruption);
            `"epoch"`: at every epoch end too; None: never (the `gradwatch
            report RUN_DIR` command draws them from the records).
        tensorboard: Also write TensorBoard event files into `log_dir`:
            the loss and gradient norms as scalars, each measured layer's
            decay rate and horizon, and the plots as images.

    Example:

    >>> import numpy as np, keras, tempfile
    >>> from keras_gradwatch import GradWatch, layers
    >>> model = keras.Sequential([keras.Input((20, 1)), layers.LSTM(4),
    ...                           keras.layers.Dense(1)])
    >>> model.compile(optimizer="adam", loss="mse")
    >>> x = np.random.rand(32, 20, 1).astype("float32")
    >>> y = x.sum(axis=1)
    >>> run = tempfile.mkdtemp()
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[GradWatch(run)])
    >>> import os; sorted(f for f in os.listdir(run) if f.endswith("json"))
    ['run.json', 'summary.json']
    """

    def __init__(
        self,
        log_dir,
        *,
        every=None,
        overhead=0.03,
        probe_data=None,
        loss=None,
        loss_steps="last",
        nonfinite="stop",
        exploding="warn",
        vanishing="warn",
        spike_factor=10.0,
        warmup=5,
        max_grad_norm=None,
        max_decay_rate=1.05,
        vanishing_fraction=1e-3,
        vanishing_patience=3,
        threshold=stats.DEFAULT_HORIZON_THRESHOLD,
        tolerance=stats.DEFAULT_BIAS_TOLERANCE,
        plots="end",
        tensorboard=False,
    ):
        if not isinstance(log_dir, (str, bytes)) and not hasattr(log_dir, "__fspath__"):
            raise InvalidInputError(
                f"Received: log_dir={log_dir!r}. Pass a folder path, e.g. "
                "GradWatch('runs/exp1')."
            )
        if every is not None:
            _positive(every, "every", integer=True)
        _positive(overhead, "overhead")
        _positive(spike_factor, "spike_factor")
        _positive(warmup, "warmup", integer=True)
        if max_grad_norm is not None:
            _positive(max_grad_norm, "max_grad_norm")
        _positive(max_decay_rate, "max_decay_rate")
        _positive(vanishing_fraction, "vanishing_fraction")
        _positive(vanishing_patience, "vanishing_patience", integer=True)
        if loss_steps not in measurement.LOSS_STEPS:
            raise InvalidInputError(
                f"Received: loss_steps={loss_steps!r}. Pass 'last' or 'all'."
            )
        if plots not in PLOT_MODES:
            raise InvalidInputError(
                f"Received: plots={plots!r}. Pass 'end' (plots and report at "
                "the end of training), 'epoch' (also at every epoch end) or "
                "None (none; `gradwatch report RUN_DIR` draws them later)."
            )
        if tensorboard:
            try:
                import tensorboard as _  # noqa: F401
            except ImportError as error:
                raise InvalidInputError(
                    "Received: tensorboard=True, but the tensorboard package "
                    "is not installed. Run `pip install tensorboard` (or "
                    "`pip install keras-gradwatch[tensorboard]`), or leave "
                    "tensorboard=False."
                ) from error
        actions = alerts_lib.resolve_actions(nonfinite, exploding, vanishing)
        super().__init__()
        self.log_dir = log_dir
        self.every = every
        self.overhead = overhead
        self.probe_data = probe_data
        self.loss = loss
        self.loss_steps = loss_steps
        self.nonfinite = nonfinite
        self.exploding = exploding
        self.vanishing = vanishing
        self.spike_factor = float(spike_factor)
        self.warmup = warmup
        self.max_grad_norm = max_grad_norm
        self.max_decay_rate = float(max_decay_rate)
        self.vanishing_fraction = float(vanishing_fraction)
        self.vanishing_patience = vanishing_patience
        self.threshold = threshold
        self.tolerance = tolerance
        self.plots = plots
        self.tensorboard = tensorboard
        self._board = None

        self.alerts = []  # every reported Alert
        self.last_measurement = None
        self._totals = records.Totals()  # the figures of what was written
        self._writer = records.RunWriter(log_dir)
        self._dispatcher = alerts_lib.AlertDispatcher(
            actions, record=self._record_alert, stop=self._stop_training
        )
        self._started = False  # a first fit has begun (records resumed)
        self._step = 0
        self._epoch = -1
        self._measurements = 0
        self._probe = None
        self._measure_error = None
        self._fits = []
        self._spent = 0.0  # seconds spent inside the callback
        self._fit_seconds = 0.0  # seconds spent in fit, over all fits
        self._last_cost = 0.0
        self._draw_cost = 1.0  # seconds, until a drawing has been timed
        self._step_norms = alerts_lib.RollingWindow()
        self._measured_norms = alerts_lib.RollingWindow()
        self._layer_norms = {}
        self._losses = alerts_lib.RollingWindow()
        self._pending_steps = []
        self._last_flush = 0.0
        self._skipped = None
        self._hooked = None
        self._status = "running"
        self._last_batch = -1
        self._loss_mean = None
        self._fit_start = time.perf_counter()
        self._in_budget = False
        self._vanishing_streak = {}

    # Lifecycle --------------------------------------------------------------

    def on_train_begin(self, logs=None):
        with self._budget():
            self._train_begin()

    def _train_begin(self):
        self._writer.open()
        if self.tensorboard and self._board is None:
            self._board = _tensorboard.Board(self.log_dir)
        if not self._started:
            self._resume_records()
            self._started = True
        self._status = "running"
        self._fit_start = time.perf_counter()
        self._last_flush = self._fit_start
        self._skipped_before = self._skipped or 0
        self._skipped = None
        self._step_at_begin = self._step
        optimizer = getattr(self.model, "optimizer", None)
        self._iterations_at_begin = (
            int(optimizer.iterations.numpy()) if optimizer is not None else 0
        )
        if self.probe_data is not None and self._probe is None:
            self._probe = _split_probe(self.probe_data, self.model.distribute_strategy)
        self._fits.append({"started": time.time(), "first_step": self._step})
        self._writer.write_json(records.RUN, self._run_settings())
        self._install_hook()
        if self._probe is not None and self._measurements == 0:
            self._measure()

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch += 1
        self._last_batch = -1
        self._loss_mean = None

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        with self._budget():
            self._step += max(1, batch - self._last_batch)
            self._last_batch = batch
            try:
                self._check_step(logs)
                if self._probe is not None and self._measure_due():
                    self._measure()
            except GradientAlertError:
                self._finish("raised")
                raise
            self._maybe_flush()

    def on_epoch_end(self, epoch, logs=None):
        with self._budget():
            self._epoch_end(logs if logs is not None else {})

    def _epoch_end(self, logs):
        last = self.last_measurement
        if last is not None and last.layers:
            shortest = min(last.layers.values(), key=lambda r: r.horizon)
            logs["decay_rate"] = shortest.decay_rate
            logs["horizon"] = shortest.horizon
        if last is not None and "grad_norm" not in logs and last.global_norm is not None:
            logs["grad_norm"] = last.global_norm
        self._flush_steps()
        self._writer.write_json(records.SUMMARY, self.summary())
        if self.plots == "epoch":
            self._draw()

    def on_train_end(self, logs=None):
        with self._budget():
            self._finish("stopped" if self.model.stop_training else "completed")

    @contextlib.contextmanager
    def _budget(self):
        """Counts the time spent inside the callback (outermost calls)."""
        if self._in_budget:
            yield
            return
        self._in_budget = True
        start = time.perf_counter()
        try:
            yield
        finally:
            self._in_budget = False
            self._spent += time.perf_counter() - start

    # Per-step checks ----------------------------------------------------------

    def _check_step(self, logs):
        loss = logs.get("loss")
        loss = None if loss is None else float(loss)
        instant = self._instant_loss(loss)
        grad_norm = logs.get("grad_norm") if self._logs_grad_norm() else None
        grad_norm = None if grad_norm is None else float(grad_norm)
        skipped = logs.get("skipped_updates")
        skipped = None if skipped is None else int(skipped)
        if skipped is None and self._loss_scaled():
            # A LossScaleOptimizer skips non-finite steps without counting
            # them: they are the steps its iterations did not advance.
            applied = int(self.model.optimizer.iterations.numpy()) - self._iterations_at_begin
            skipped = self._skipped_before + (self._step - self._step_at_begin) - applied
        self._pending_steps.append(
            {
                "step": self._step,
                "epoch": self._epoch,
                "loss": instant,
                "grad_norm": grad_norm,
                "skipped_updates": skipped,
            }
        )
        scaled = self._loss_scaled()
        new_skips = 0
        if skipped is not None:
            new_skips = 0 if self._skipped is None else skipped - self._skipped
            self._skipped = skipped
        if loss is not None and not math.isfinite(loss):
            self._nonfinite("loss", loss, "The loss is not finite")
        elif grad_norm is not None and not math.isfinite(grad_norm) and not scaled:
            self._nonfinite(
                "grad_norm", grad_norm, "The gradient norm is not finite"
            )
        elif new_skips > 0 and not scaled:
            self._nonfinite(
                "skipped_updates",
                float(new_skips),
                f"{new_skips} update(s) had non-finite gradients and were "
                "skipped",
            )
        if _finite(grad_norm):
            self._check_norm(grad_norm, self._step_norms, None, "grad_norm")
        if _finite(instant):
            # Batch losses vary a lot once they are small: only a jump far
            # above every recent one is a sign of a blow-up.
            highest = self._losses.max()
            if len(self._losses) >= self.warmup and instant > self.spike_factor * highest > 0:
                self._alert(
                    "exploding",
                    None,
                    instant,
                    self.spike_factor * highest,
                    "loss",
                    f"The loss jumped to {instant:.3g} at step {self._step}, "
                    f"{instant / highest:.0f}x the highest of the last "
                    f"{len(self._losses)} steps ({highest:.3g}): a sign of an "
                    "exploding gradient (or of a bad batch). "
                    + alerts_lib.clip_advice(self._clipnorm()),
                )
            self._losses.add(instant)

    def _instant_loss(self, running):
        """This step's loss, from Keras's running mean over the epoch."""
        if running is None:
            return None
        count = self._last_batch + 1
        previous = self._loss_mean
        self._loss_mean = running
        if previous is None or count <= 1 or not math.isfinite(previous):
            return running
        return count * running - (count - 1) * previous

    def _check_norm(self, norm, history, layer, signal):
        where = f" of layer '{layer}'" if layer else ""
        if self.max_grad_norm is not None and norm > self.max_grad_norm:
            self._alert(
                "exploding",
                layer,
                norm,
                self.max_grad_norm,
                signal,
                f"The gradient norm{where} is {norm:.3g} at step {self._step}, "
                f"above max_grad_norm={self.max_grad_norm:g}. "
                + alerts_lib.clip_advice(self._clipnorm()),
            )
        else:
            ratio = alerts_lib.spike_ratio(norm, history, self.warmup)
            if ratio is not None and ratio > self.spike_factor:
                median = history.median()
                self._alert(
                    "exploding",
                    layer,
                    norm,
                    self.spike_factor * median,
                    signal,
                    f"The gradient norm{where} is {norm:.3g} at step "
                    f"{self._step}, {ratio:.0f}x its recent median "
                    f"{median:.3g}. " + alerts_lib.clip_advice(self._clipnorm()),
                )
        history.add(norm)

    # Measurements -------------------------------------------------------------

    def _measure_due(self):
        if self._measure_error is not None:
            return False
        if self.every is not None:
            return self._step % self.every == 0
        elapsed = self._fit_seconds + time.perf_counter() - self._fit_start
        # Keep room in the budget for drawing the plots at the end.
        reserve = self._draw_cost if self.plots is not None else 0.0
        return self._spent + self._last_cost + reserve <= self.overhead * elapsed

    def _measure(self, check=True):
        start = time.perf_counter()
        x, y = self._probe
        try:
            result = measurement._measure(
                self.model,
                x,
                y,
                loss=self.loss,
                loss_steps=self.loss_steps,
                window=None,
                threshold=self.threshold,
                tolerance=self.tolerance,
                gradient_norms=True,
                profiles=None,
            )
        except Exception as error:  # noqa: BLE001 - never break training
            self._measure_error = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"GradWatch cannot measure this model, so it only checks the "
                f"logs from now on. {self._measure_error}",
                stacklevel=2,
            )
            return None
        self.last_measurement = result
        index = self._measurements
        self._measurements += 1
        profiles = {name: r.profile for name, r in result.layers.items()}
        relative = self._writer.write_profiles(index, profiles) if profiles else None
        record = {
            "index": index,
            "step": self._step,
            "epoch": max(self._epoch, 0),
            "time": time.time(),
            "length": result.length,
            "sequences": result.sequences,
            "loss_steps": result.loss_steps,
            "window": result.window,
            "global_norm": result.global_norm,
            "layer_norms": result.layer_norms,
            "profiles": relative,
            "layers": {
                name: {
                    "site": r.site,
                    "decay_rate": r.decay_rate,
                    "horizon": r.horizon,
                    "truncation_bias": r.truncation_bias,
                    "suggested_window": r.suggested_window,
                    "lag0": float(r.profile[0]) if r.profile.size else None,
                }
                for name, r in result.layers.items()
            },
        }
        self._writer.append(records.MEASUREMENTS, record)
        self._totals.add_measurement(record)
        if self._board is not None:
            self._board.measurement(self._step, result)
        if check:
            self._check_measurement(result)
        # The next measurement's expected cost; the first one's includes
        # tracing the probed pass, which is not paid again.
        self._last_cost = time.perf_counter() - start if self._measurements > 1 else 0.0
        return result

    def _check_measurement(self, result):
        layer_norms = result.layer_norms or {}
        broken = [name for name, v in layer_norms.items() if not math.isfinite(v)]
        if broken:
            self._nonfinite(
                "layer_norm",
                layer_norms[broken[0]],
                "The gradient on the probe batch is not finite",
                layer=broken[0],
            )
            return
        if not self._logs_grad_norm() and _finite(result.global_norm):
            self._check_norm(result.global_norm, self._measured_norms, None, "grad_norm")
        for name, norm in layer_norms.items():
            history = self._layer_norms.setdefault(name, alerts_lib.RollingWindow())
            self._check_norm(norm, history, name, "layer_norm")
        for name, record in result.layers.items():
            self._check_profile(name, record)

    def _check_profile(self, name, record):
        profile = record.profile
        if not np.isfinite(profile).all():
            self._nonfinite(
                "profile", float("nan"), "The measured gradient is not finite", layer=name
            )
            return
        # The far lags show the recurrence's own rate; a dip near the loss
        # can hide it from a fit over the whole profile.
        rate = max(
            (r for r in (record.decay_rate, stats.tail_decay_rate(profile)) if _finite(r)),
            default=float("nan"),
        )
        if _finite(rate) and rate > self.max_decay_rate:
            far = len(profile) - 1
            growth = profile[far] / profile[0] if profile[0] > 0 else float("inf")
            self._alert(
                "exploding",
                name,
                rate,
                self.max_decay_rate,
                "profile",
                f"The gradient of layer '{name}' grows going back in time, "
                f"by {rate:.3f}x per step (above max_decay_rate="
                f"{self.max_decay_rate:g}); {far} steps back it is "
                f"{growth:.3g}x its value at the loss. The recurrence amplifies "
                "gradients: training is about to blow up. "
                + alerts_lib.clip_advice(self._clipnorm())
                + " Also consider a smaller recurrent weight scale "
                "(recurrent_initializer='orthogonal'), a saturating activation "
                "(tanh rather than relu), or an LSTM/GRU.",
            )
        if self._step == 0 or not profile.size or not profile[0] > 0:
            return
        far = len(profile) - 1
        backprop = getattr(self.model, "backprop", None)
        if backprop is not None:
            far = min(far, backprop - 1)
        fraction = profile[far] / profile[0]
        streak = self._vanishing_streak.get(name, 0) + 1 if fraction < self.vanishing_fraction else 0
        self._vanishing_streak[name] = streak
        if streak < self.vanishing_patience:
            return
        self._alert(
            "vanishing",
            name,
            float(fraction),
            self.vanishing_fraction,
            "profile",
            f"Layer '{name}': only {fraction:.2g} of the gradient at the loss "
            f"reaches {far} steps back (horizon {record.horizon} steps, decay "
            f"rate {record.decay_rate:.3f} per step), below "
            f"{self.vanishing_fraction:g} at {streak} measurements in a row. It "
            f"cannot learn dependencies longer than about {record.horizon} "
            f"steps. {self._vanishing_advice(name, backprop)}",
        )

    def _vanishing_advice(self, name, backprop):
        inner = getattr(self.model, "model", self.model)
        layer = next(
            (l for l in inner._flatten_layers(include_self=False) if l.name == name),
            None,
        )
        cell = getattr(layer, "cell", None)
        gated = isinstance(
            cell, (keras.layers.LSTMCell, keras.layers.GRUCell)
        ) or isinstance(getattr(layer, "forward_layer", None), (keras.layers.LSTM, keras.layers.GRU))
        span = (
            " A longer backprop span will not help beyond that horizon."
            if backprop is not None
            else ""
        )
        if gated:
            return (
                "The layer is gated already: give it time to learn to keep "
                "its memory, start it with a larger forget-gate bias (e.g. "
                "a bias_initializer with +1 to +3 on the forget gate), or "
                "shorten the path with skip connections or attention." + span
            )
        return (
            "Use an LSTM or GRU (e.g. keras_gradwatch.layers.LSTM), skip "
            "connections, or an orthogonal recurrent initializer." + span
        )

    # Alerts -----------------------------------------------------------------

    def _alert(self, kind, layer, value, threshold, signal, message, key=None):
        return self._dispatcher.dispatch(
            alerts_lib.Alert(
                kind=kind,
                step=self._step,
                epoch=max(self._epoch, 0),
                layer=layer,
                value=float(value),
                threshold=None if threshold is None else float(threshold),
                message=message,
                signal=signal,
            ),
            key=key,
        )

    def _nonfinite(self, signal, value, what, layer=None):
        # Step signals name no layer until diagnosed: rate-limit them as one.
        key = ("nonfinite", signal, layer)
        if not self._dispatcher.due(key):
            self._dispatcher.skip("nonfinite", key)
            return
        if layer is None:
            layer, detail = self._first_nonfinite_layer()
        else:
            detail = f"First layer affected: '{layer}'."
        self._alert(
            "nonfinite",
            layer,
            value,
            None,
            signal,
            f"{what} at step {self._step} (epoch {max(self._epoch, 0)}). "
            f"{detail} Lower the learning rate, "
            + alerts_lib.clip_advice(self._clipnorm(), lead="or clip")
            + " Check the data for NaN or Inf.",
            key=key,
        )

    def _first_nonfinite_layer(self):
        """Names the first layer (in model order) with broken weights/grads."""
        inner = getattr(self.model, "model", self.model)
        for layer in inner.layers:
            for weight in layer.weights:
                if not np.isfinite(np.asarray(weight.numpy(), dtype="float64")).all():
                    return layer.name, (
                        f"First layer affected: '{layer.name}' (its weights are "
                        "no longer finite)."
                    )
        if self._probe is not None and self._measure_error is None:
            result = self._measure(check=False)
            for name, norm in ((result.layer_norms or {}) if result else {}).items():
                if not math.isfinite(norm):
                    return name, (
                        f"First layer affected: '{name}' (its gradient on the "
                        "probe batch is not finite)."
                    )
        return None, (
            "The weights and the probe batch's gradients are finite: the cause "
            "is likely in the data of this step (NaN/Inf in inputs or targets) "
            "or a one-off overflow."
        )

    def _record_alert(self, alert):
        self.alerts.append(alert)
        self._writer.append(records.ALERTS, alert.to_dict())
        self._totals.add_alert(alert.to_dict())

    def _stop_training(self):
        self.model.stop_training = True

    def _clipnorm(self):
        return alerts_lib.clip_suggestion(
            self._step_norms if self._logs_grad_norm() else self._measured_norms
        )

    # Records ----------------------------------------------------------------

    def summary(self):
        """The run's figures, as written to `summary.json`.

        Computed from the records as they are written (`records.Totals`),
        with this callback's status and its count of every alert.
        """
        self._flush_steps()
        summary = self._totals.summary(self._status)
        summary.update(
            alerts={kind: self._dispatcher.counts[kind] for kind in alerts_lib.KINDS},
            measurement_error=self._measure_error,
            updated=time.time(),
        )
        return summary

    def _run_settings(self):
        model = self.model
        tbptt = None
        if hasattr(model, "window") and hasattr(model, "backprop"):
            tbptt = {
                "window": model.window,
                "backprop": model.backprop,
                "reset": getattr(model, "reset", None),
            }
        return {
            "format": records.FORMAT_VERSION,
            "model": model.name,
            "tbptt": tbptt,
            "settings": {
                "every": self.every,
                "overhead": self.overhead,
                "loss": self.loss if isinstance(self.loss, (str, type(None))) else repr(self.loss),
                "loss_steps": self.loss_steps,
                "actions": {
                    kind: action if isinstance(action, str) else repr(action)
                    for kind, action in self._dispatcher.actions.items()
                },
                "spike_factor": self.spike_factor,
                "warmup": self.warmup,
                "max_grad_norm": self.max_grad_norm,
                "max_decay_rate": self.max_decay_rate,
                "vanishing_fraction": self.vanishing_fraction,
                "threshold": self.threshold,
                "tolerance": self.tolerance,
            },
            "fits": self._fits,
        }

    def _resume_records(self):
        """Continues the step count of a run already in `log_dir`."""
        try:
            run = records.load_run(self.log_dir)
        except RunDirectoryError:
            return  # an empty or new folder
        self._totals = records.totals(run)
        self._step = self._totals.step
        self._epoch = self._totals.epoch
        self._measurements = self._totals.measurements
        self._fits = list(run.settings.get("fits", []))
        self._dispatcher.counts.update(
            {k: v for k, v in ((run.summary or {}).get("alerts") or {}).items() if k in alerts_lib.KINDS}
        )

    def _maybe_flush(self):
        now = time.perf_counter()
        if now - self._last_flush >= FLUSH_SECONDS:
            self._flush_steps()
            self._last_flush = now

    def _flush_steps(self):
        for record in self._pending_steps:
            self._writer.append(records.STEPS, record, flush=False)
            self._totals.add_step(record)
        if self._board is not None:
            self._board.steps(self._pending_steps)
        self._pending_steps = []
        self._writer.flush()

    def _finish(self, status):
        self._status = status
        self._fit_seconds += time.perf_counter() - self._fit_start
        self._uninstall_hook()
        self._flush_steps()
        self._writer.write_json(records.SUMMARY, self.summary())
        self._writer.close()
        if self.plots is not None:
            try:
                self._draw()
            except KeyboardInterrupt:
                pass  # a second interrupt skips the drawing, not the records
        if self._board is not None:
            self._board.flush()

    def _draw(self):
        """Draws the plots and the report from the records."""
        from keras_gradwatch import report

        start = time.perf_counter()
        try:
            path = report.write_report(self.log_dir)
        except Exception as error:  # noqa: BLE001 - never break training
            warnings.warn(
                f"GradWatch could not draw the report: {type(error).__name__}: "
                f"{error}. The records are intact; `gradwatch report "
                f"{self.log_dir}` draws it later.",
                stacklevel=2,
            )
            return None
        if self._board is not None:
            from keras_gradwatch import plots

            self._board.images(self._step, (plots.DECAY, plots.HEATMAP, plots.NORMS))
        self._draw_cost = time.perf_counter() - start
        return path

    # The probe batch ----------------------------------------------------------

    def _install_hook(self):
        """Wraps `model.train_function` for this fit.

        The wrapper takes the probe batch from the first training data it
        sees (and measures before the first update), and writes the records
        if `fit` dies of an exception or a KeyboardInterrupt.
        """
        model = self.model
        original = model.train_function
        if original is None or self._hooked is not None:
            return

        def train_function(iterator):
            try:
                if self._probe is None and isinstance(
                    iterator, (tf.data.Iterator, tf.distribute.DistributedIterator)
                ):
                    batches = []
                    for _ in range(model.steps_per_execution):
                        optional = iterator.get_next_as_optional()
                        if not bool(optional.has_value()):
                            break
                        batches.append(optional.get_value())
                    if batches:
                        self._probe = _split_probe(
                            batches[0], self.model.distribute_strategy
                        )
                        with self._budget():
                            self._measure()
                        # Keras runs a plain iterator of batches step by step.
                        return original(iter(batches))
                return original(iterator)
            except (StopIteration, tf.errors.OutOfRangeError):
                raise
            except GradientAlertError:
                self._finish("raised")
                raise
            except BaseException:
                self._finish("interrupted")
                raise

        self._hooked = (original, train_function)
        model.train_function = train_function

    def _uninstall_hook(self):
        if self._hooked is None:
            return
        original, wrapper = self._hooked
        if self.model.train_function is wrapper:
            self.model.train_function = original
        self._hooked = None

    def _logs_grad_norm(self):
        return hasattr(self.model, "backprop")

    def _loss_scaled(self):
        return isinstance(
            getattr(self.model, "optimizer", None), keras.optimizers.LossScaleOptimizer
        )


def _split_probe(data, strategy):
    """`(x, y)` of a batch, read as Keras reads `fit`'s data.

    Per-replica values (under `tf.distribute`) are put back together into
    the global batch, so that measurements match a single-device run.
    """
    if isinstance(data, (tuple, list)) and len(data) in (1, 2, 3):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(tuple(data))
    else:
        x, y = data, None
    return _global(x, strategy), _global(y, strategy)


def _global(structure, strategy):
    def gather(value):
        if isinstance(value, tf.distribute.DistributedValues):
            return tf.concat(strategy.experimental_local_results(value), axis=0)
        return value

    if structure is None:
        return None
    return keras.tree.map_structure(gather, structure)
