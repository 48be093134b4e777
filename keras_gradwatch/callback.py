"""`GradWatch`: the Keras callback that watches gradients during `fit`.

This module holds the Keras hooks and the wiring; the work is done by:
`_schedule` (when to measure, the time budget), `_train_step` (what is read
from or added to the train step), `_probe` (the batch measured on),
`measurement` (the measurement), `_detectors` (what counts as exploding or
vanishing), `_alerting` and `alerts` (making and acting on an alert),
`_recorder` (the run records), `_drawing` (when plots are drawn) and
`_model_facts`.
"""

import contextlib
import math
import pathlib
import time
import warnings

import keras
import numpy as np

from keras_gradwatch import _alerting
from keras_gradwatch import _compat
from keras_gradwatch import _detectors
from keras_gradwatch import _drawing
from keras_gradwatch import _model_facts
from keras_gradwatch import _probe
from keras_gradwatch import _recorder
from keras_gradwatch import _schedule
from keras_gradwatch import _settings
from keras_gradwatch import _train_step
from keras_gradwatch import alerts as alerts_lib
from keras_gradwatch import measurement
from keras_gradwatch import stats
from keras_gradwatch.errors import GradientAlertError

PLOT_MODES = _settings.PLOT_MODES
PROBE_ROWS = _probe.PROBE_ROWS


def _finite(value):
    return value is not None and math.isfinite(value)


class GradWatch(keras.callbacks.Callback):
    """Watches gradients during `fit`: measures, alerts, keeps run records.

    Attach it to any Keras model (Sequential, functional or subclassed,
    recurrent or feed-forward) or to a `TruncatedBPTT` model:
    `model.fit(..., callbacks=[GradWatch("runs/exp1")])`. It needs nothing
    else: it takes its probe batch from the first training batch (its first
    16 sequences), or from `probe_data`.

    What it does:

    - at every step, cheap checks of the logs: a non-finite loss, a loss
      jump, and the global gradient norm `grad_norm` of the update (a spike,
      or a jump by orders of magnitude in the first steps). `TruncatedBPTT`
      logs `grad_norm` itself; for other models GradWatch adds it to the
      compiled train step (the norm of the gradients the optimizer applies,
      before clipping), so it is in every step's logs and in `History`;
    - measurements on the probe batch: global and per-layer gradient norms,
      and for recurrent layers the profile ‖∂L/∂h_t‖ against steps back from
      the loss with its statistics (see `keras_gradwatch.measure`). By
      default before the first update, halfway through and at the end of
      every epoch, and beyond those as often as keeps the callback's time
      within `overhead` of the training time, first at steps 1, 2, 4, 8...;
    - alerts (`"nonfinite"`, `"exploding"`, `"vanishing"`) that say what was
      measured, with a concrete suggestion, acted on per kind, rate-limited
      (see `keras_gradwatch.alerts`);
    - run records in `log_dir` (see `keras_gradwatch.records`), and the plots
      and `report.html` drawn from them: at the end of a `fit` when the time
      budget allows (or it ended early), and in any case when the process
      exits; `draw()` draws them at any time;
    - at each epoch end, `decay_rate` and `horizon` (of the measured layer
      with the shortest horizon, measured at that epoch's last step) in the
      logs.

    It changes nothing in training: weights after `fit` are the same with or
    without it. Reused over several `fit` calls, it continues one run, with a
    continuing step count; a `log_dir` holding an earlier run is continued,
    never overwritten.

    Args:
        log_dir: Run folder (created; an unwritable folder is an error at
            train begin, before any step).
        every: Measure at step 0 and every `every` steps, and at no other
            step. Default None: the schedule above.
        overhead: Share of the training time the callback may take beyond
            its scheduled measurements (default 0.03). One-off costs
            (tracing the measurement, once per model and probe shape) are
            not charged to it.
        probe_data: `(x, y)` or `x` to measure on. Default: the first
            `PROBE_ROWS` (16) sequences of the first training batch.
        loss: Loss of the measurements; defaults to the compiled loss.
        loss_steps: `"last"` (default) or `"all"`, see `measure`.
        nonfinite: Action on NaN/Inf: `"stop"` (default), `"warn"`,
            `"raise"`, a callable taking the `Alert`, or None (off).
        exploding: Action on exploding gradients (default `"warn"`).
        vanishing: Action on vanishing gradients (default `"warn"`).
        spike_factor: A gradient norm above `spike_factor` times the 90th
            percentile of its last 100 values, or a loss above
            `spike_factor` times the highest of the last 100, in the same
            `fit` call, is a jump (default 10).
        warmup: Number of values the histories need before `spike_factor`
            applies (default 5). Before that, from the second step on, a
            value above `spike_factor ** 2` times the largest so far is a
            jump: abrupt blow-ups are caught from the first steps.
        max_grad_norm: Optional hard ceiling on the global gradient norm.
        max_decay_rate: A profile grows going back in time (exploding) when,
            over at least 8 lags, its per-step rate fitted from lag 1 (over
            all lags or the far quarter) exceeds this (default 1.05) and its
            far end is at least 10x its lowest value.
        vanishing_fraction: A profile whose far end holds less than this
            fraction of the gradient at lag 0 is vanishing (default 1e-3).
            The far end is the profile's last lag, or on `TruncatedBPTT`
            models the last lag within `backprop`.
        vanishing_patience: Vanishing is reported when it holds at this
            many consecutive measurements (default 3), not counting the one
            before the first update and the early ones (steps 1, 2, 4, ...:
            the network is still almost the untrained one); after that,
            again only while the training loss has stopped falling.
        threshold: Relative threshold of the `horizon` statistic.
        tolerance: Tolerance of the `suggested_window` statistic.
        plots: `"end"` (default): draw the PNG plots and `report.html` into
            `log_dir` at the end of a `fit` when the time budget allows (a
            drawing takes about half a second), when training stops early
            (an alert, an exception, Ctrl-C), and otherwise when the Python
            process exits. In an interactive session (Jupyter, IPython) the
            end of a `fit` also draws if the last drawing is a minute old.
            `"epoch"`: also at epoch ends, as the budget allows. None: never
            (the `gradwatch report RUN_DIR` command draws them from the
            records).
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
    >>> history = model.fit(x, y, epochs=2, verbose=0,
    ...                     callbacks=[GradWatch(run)])
    >>> sorted(k for k in history.history)
    ['decay_rate', 'grad_norm', 'horizon', 'loss']
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
        _compat.require_tensorflow_backend("GradWatch")
        actions = _settings.check(
            log_dir=log_dir, every=every, overhead=overhead, loss_steps=loss_steps,
            nonfinite=nonfinite, exploding=exploding, vanishing=vanishing,
            spike_factor=spike_factor, warmup=warmup, max_grad_norm=max_grad_norm,
            max_decay_rate=max_decay_rate, vanishing_fraction=vanishing_fraction,
            vanishing_patience=vanishing_patience, plots=plots, tensorboard=tensorboard,
        )
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

        self.alerts = []  # every reported Alert
        self.last_measurement = None
        self._recorder = _recorder.RunRecorder(log_dir, tensorboard)
        self._desk = _alerting.AlertDesk(
            actions, record=self._record_alert, stop=self._stop_training,
            where=lambda: (self._step, max(self._epoch, 0)),
        )
        self._schedule = _schedule.MeasurementSchedule(every)
        self._budget = None  # the folder's Budget, from the first fit on
        self._started = False  # a first fit has begun (records resumed)
        self._status = "running"
        self._in_callback = False
        self._hook = None
        self._fits = []
        # Where the run is.
        self._step = 0
        self._epoch = -1
        self._batch = -1  # last batch index seen in the epoch
        # Measurements.
        self._probe = None
        self._measurements = 0
        self._measured_step = None
        self._measure_error = None
        self._loss_sum = 0.0  # per-step losses since the last measurement
        self._loss_count = 0
        # Per-step signals and their detectors (new for each fit).
        self._step_loss = None
        self._step_jumps = None
        self._logs_norm = False  # a step's logs held grad_norm
        self._skipped = None
        self._skipped_before = 0
        # Measured signals and their detectors.
        self._probe_jumps = _detectors.StepJumps(
            self.spike_factor, warmup, max_grad_norm, unit="measurements"
        )
        self._growth = _detectors.GrowthInTime(self.max_decay_rate)
        self._vanishing = _detectors.VanishingTail(self.vanishing_fraction, vanishing_patience)
        self._facts = {}

    # Lifecycle --------------------------------------------------------------

    def on_train_begin(self, logs=None):
        self._budget = _schedule.budget_for(self.log_dir, self.overhead)
        self._budget.start_fit()
        with self._timed():
            self._train_begin()

    def _train_begin(self):
        self._recorder.open()
        if not self._started:
            self._resume()
            self._started = True
        self._status = "running"
        self._skipped_before = self._skipped or 0
        self._skipped = None
        self._step_at_begin = self._step
        self._iterations_at_begin = _model_facts.iterations(self.model)
        inner = _model_facts.inner(self.model)
        self._facts = _model_facts.layer_facts(inner)
        self._desk.optimizer = _model_facts.optimizer_name(self.model)
        if self._probe is None:
            self._probe = (
                _probe.split(self.probe_data, self.model.distribute_strategy)
                if self.probe_data is not None
                else _probe.known(self.log_dir, inner)
            )
        self._fits.append({"started": time.time(), "first_step": self._step})
        # A new fit may train on other data (a curriculum's next stage): its
        # steps are compared with each other, after a warm-up of their own.
        self._step_jumps = _detectors.StepJumps(
            self.spike_factor, self.warmup, self.max_grad_norm
        )
        self._step_loss = _train_step.StepLoss(self.model)
        self._recorder.write_settings(
            _settings.record(
                self, self.model.name, _model_facts.tbptt_settings(self.model),
                self._desk.dispatcher.actions, self._fits,
            )
        )
        if not _model_facts.is_tbptt(self.model):  # it logs grad_norm itself
            _train_step.log_grad_norm(self.model)
        self._hook = _train_step.TrainFunctionHook(
            self.model,
            wants_probe=lambda: self._probe is None,
            take_probe=self._take_probe,
            on_error=self._step_failed,
        )
        if self._probe is not None and self._measurements == 0:
            self._measure("start")

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch += 1
        self._batch = -1
        if self._step_loss is not None:
            self._step_loss.new_epoch()

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        with self._timed():
            previous = self._step
            self._step += max(1, batch - self._batch)
            self._batch = batch
            try:
                self._check_step(logs)
                if self._probe is not None and self._measure_error is None:
                    reason = self._schedule.due(
                        self._step,
                        previous,
                        batch,
                        self.params.get("steps") if self.params else None,
                        self._budget,
                        reserve_drawing=self.plots is not None,
                    )
                    if reason:
                        self._measure(reason)
            except GradientAlertError:
                self._finish("raised")
                raise

    def on_epoch_end(self, epoch, logs=None):
        with self._timed():
            self._epoch_end(logs if logs is not None else {})

    def _epoch_end(self, logs):
        if self._probe is not None and self._measure_error is None:
            reason = self._schedule.epoch_end(self._step, self._measured_step)
            if reason:
                try:
                    self._measure(reason)
                except GradientAlertError:
                    self._finish("raised")
                    raise
        last = self.last_measurement
        if last is not None and last.layers:
            shortest = min(last.layers.values(), key=lambda r: r.horizon)
            logs["decay_rate"] = shortest.decay_rate
            logs["horizon"] = shortest.horizon
        if last is not None and "grad_norm" not in logs and last.global_norm is not None:
            logs["grad_norm"] = last.global_norm
        self._recorder.write_summary(self.summary())  # summary() flushes the steps
        if self.plots == "epoch" and self._budget.can_draw():
            self._draw()

    def on_train_end(self, logs=None):
        with self._timed():
            self._finish("stopped" if self.model.stop_training else "completed")

    @contextlib.contextmanager
    def _timed(self):
        """Charges the time spent inside the callback (outermost calls)."""
        if self._in_callback:
            yield
            return
        self._in_callback = True
        start = time.perf_counter()
        try:
            yield
        finally:
            self._in_callback = False
            if self._budget is not None:
                self._budget.charge(time.perf_counter() - start)

    # Per-step checks ----------------------------------------------------------

    def _check_step(self, logs):
        loss = _number(logs.get("loss"))
        instant = self._step_loss(loss, self._batch)
        grad_norm = _number(logs.get("grad_norm"))
        self._logs_norm = self._logs_norm or grad_norm is not None
        skipped = logs.get("skipped_updates")
        skipped = None if skipped is None else int(skipped)
        scaled = _model_facts.loss_scaled(self.model)
        if skipped is None and scaled:
            # A LossScaleOptimizer skips non-finite steps without counting
            # them: they are the steps its iterations did not advance.
            applied = _model_facts.iterations(self.model) - self._iterations_at_begin
            skipped = self._skipped_before + (self._step - self._step_at_begin) - applied
        self._recorder.add_step(
            {
                "step": self._step,
                "epoch": self._epoch,
                "loss": instant,
                "grad_norm": grad_norm,
                "skipped_updates": skipped,
            }
        )
        new_skips = 0
        if skipped is not None:
            new_skips = 0 if self._skipped is None else skipped - self._skipped
            self._skipped = skipped
        if _finite(grad_norm):
            self._desk.step_norms.add(grad_norm)
        # Jumps first: a blow-up is reported at the step where the loss or the
        # norm leaps, before the step where it turns NaN.
        found = self._step_jumps.check(self._step, instant, grad_norm)
        if found:
            self._desk.report(
                found,
                " A sign of an exploding gradient (or of a bad batch). " + self._desk.clip_advice(),
            )
        if loss is not None and not math.isfinite(loss):
            self._nonfinite("loss", loss, "The loss is not finite")
        elif grad_norm is not None and not math.isfinite(grad_norm) and not scaled:
            self._nonfinite("grad_norm", grad_norm, "The gradient norm is not finite")
        elif new_skips > 0 and not scaled:
            self._nonfinite(
                "skipped_updates",
                float(new_skips),
                f"{new_skips} update(s) had non-finite gradients and were skipped",
            )
        if _finite(instant):
            self._loss_sum += instant
            self._loss_count += 1

    # Measurements -------------------------------------------------------------

    def _take_probe(self, batch):
        self._probe = _probe.from_batch(batch, self.model.distribute_strategy)
        _probe.remember(self.log_dir, _model_facts.inner(self.model), self._probe)
        if self._measurements == 0:
            with self._timed():
                self._measure("start")

    def _measure(self, reason, check=True):
        start = time.perf_counter()
        traces = measurement._traces(self.model)
        x, y = self._probe
        try:
            result = measurement._measure(
                self.model, x, y, loss=self.loss, loss_steps=self.loss_steps,
                window=None, threshold=self.threshold, tolerance=self.tolerance,
                gradient_norms=True, profiles=None,
            )
        except Exception as error:  # noqa: BLE001 - never break training
            self._measure_error = f"{type(error).__name__}: {error}"
            warnings.warn(
                "GradWatch cannot measure this model, so it only checks the "
                f"logs from now on. {self._measure_error}",
                stacklevel=alerts_lib._user_stacklevel(),
            )
            return None
        seconds = time.perf_counter() - start
        traced = measurement._traces(self.model) > traces
        if self._budget is not None:
            self._budget.measured(seconds, traced)
        self.last_measurement = result
        self._recorder.add_measurement(
            result, index=self._measurements, step=self._step, epoch=max(self._epoch, 0),
            reason=reason, seconds=seconds, traced=traced,
        )
        self._measurements += 1
        self._measured_step = self._step
        loss_level = self._loss_sum / self._loss_count if self._loss_count else None
        self._loss_sum, self._loss_count = 0.0, 0
        if check:
            self._check_measurement(result, loss_level, reason)
        return result

    def _check_measurement(self, result, loss_level, reason):
        layer_norms = result.layer_norms or {}
        broken = [name for name, v in layer_norms.items() if not math.isfinite(v)]
        if broken:
            if _probe.is_finite(self._probe) and _model_facts.weights_finite(
                _model_facts.inner(self.model)
            ):
                # Finite weights and data, non-finite gradient: it
                # overflowed. The cause is an exploding gradient: say so
                # before the NaN.
                self._desk.alert(
                    "exploding", broken[0], float("inf"), None, "layer_norm",
                    f"The gradient of layer '{broken[0]}' on the probe batch "
                    f"overflowed (not finite) at step {self._step} while every "
                    "weight is finite: the gradient explodes. "
                    + self._desk.clip_advice() + " Lower the learning rate.",
                )
            self._nonfinite(
                "layer_norm", layer_norms[broken[0]],
                "The gradient on the probe batch is not finite", layer=broken[0],
            )
            return
        if _finite(result.global_norm):
            self._desk.measured_norms.add(result.global_norm)
            # Without every step's norm, the probe batch's is the signal. (A
            # layer's share of the gradient shifts a lot early in training:
            # per-layer norms are recorded and drawn, not alerted on.)
            if not self._logs_norm:
                found = self._probe_jumps.check(
                    self._step, None, result.global_norm,
                    what="gradient norm on the probe batch",
                )
                if found:
                    self._desk.report(found, " " + self._desk.clip_advice())
        backprop = getattr(self.model, "backprop", None)
        for name, record in result.layers.items():
            self._check_profile(name, record, backprop, loss_level, reason)

    def _check_profile(self, name, record, backprop, loss_level, reason):
        profile = record.profile
        if not np.isfinite(profile).all():
            self._nonfinite(
                "profile", float("nan"), "The measured gradient is not finite", layer=name
            )
            return
        facts = self._facts.get(name.split("#")[0], _detectors.LayerFacts())
        if self._desk.active("exploding"):
            found = self._growth.check(
                name, profile, self._step, facts, self._desk.clip_advice(), record.site
            )
            if found:
                self._desk.report(found)
        if self._desk.active("vanishing"):
            far = len(profile) - 1 if backprop is None else backprop - 1
            found = self._vanishing.check(
                name, record, self._step, far, loss_level, facts, backprop,
                counts=reason not in ("start", "early"),
            )
            if found:
                self._desk.report(found)

    # Alerts -----------------------------------------------------------------

    def _nonfinite(self, signal, value, what, layer=None):
        self._desk.nonfinite(signal, value, what, self._first_nonfinite_layer, layer=layer)

    def _first_nonfinite_layer(self):
        """Names the first layer (in model order) with broken weights/grads."""
        name = _model_facts.first_nonfinite_layer(_model_facts.inner(self.model))
        if name is not None:
            return name, f"First layer affected: '{name}' (its weights are no longer finite)."
        if self._probe is not None and self._measure_error is None:
            result = self._measure("diagnosis", check=False)
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
        self._recorder.add_alert(alert)

    def _stop_training(self):
        self.model.stop_training = True

    # Records and drawing --------------------------------------------------------

    def summary(self):
        """The run's figures, as written to `summary.json`.

        Computed from the records as they are written (`records.Totals`),
        with this callback's status and its count of every alert.
        """
        self._recorder.flush()
        summary = self._recorder.totals.summary(self._status)
        summary.update(
            alerts={kind: self._desk.counts[kind] for kind in alerts_lib.KINDS},
            measurement_error=self._measure_error,
            updated=time.time(),
        )
        return summary

    def draw(self):
        """Draws the plots and `report.html` into `log_dir` now.

        `GradWatch` draws by itself (see `plots`); call this to look at a
        run between `fit` calls, e.g. in a notebook.

        Returns:
            The path of `report.html`, or None if drawing failed (a warning
            says why; the records are intact).
        """
        self._recorder.flush()
        if self._draw() is None:
            return None
        from keras_gradwatch import report

        return pathlib.Path(self.log_dir) / report.REPORT

    def _resume(self):
        """Continues the step count of a run already in `log_dir`."""
        resumed = self._recorder.resume(alerts_lib.KINDS)
        if resumed is None:
            return
        self._step = resumed.step
        self._epoch = resumed.epoch
        self._measurements = resumed.measurements
        self._measured_step = resumed.measured_step
        self._fits = resumed.fits
        self._desk.counts.update(resumed.alert_counts)

    def _step_failed(self, error):
        self._finish("raised" if isinstance(error, GradientAlertError) else "interrupted")

    def _finish(self, status):
        if self._hook is None and self._status != "running":
            return  # finished already (an error inside a step, then train end)
        self._status = status
        self._budget.end_fit()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._recorder.write_summary(self.summary())  # summary() flushes the steps
        self._recorder.close()
        if self.plots is not None:
            try:
                self._draw_at_end(abnormal=status != "completed")
            except KeyboardInterrupt:
                self._defer_drawing()  # a second Ctrl-C: draw at exit

    def _draw_at_end(self, abnormal):
        """Draws now if training ended early or the budget allows (or, in
        an interactive session, if the last drawing is a minute old);
        otherwise when the process exits."""
        budget = self._budget
        stale = budget.since_drawing() > _drawing.INTERACTIVE_SECONDS
        if abnormal or budget.can_draw() or (stale and _drawing._interactive()):
            self._draw()
        else:
            self._defer_drawing()

    def _defer_drawing(self):
        _drawing.defer(self.log_dir, self._recorder.images_later(self._step))

    def _draw(self):
        seconds = _drawing.draw(self.log_dir)
        if seconds is None:
            return None
        if self._budget is not None:
            self._budget.drew(seconds)
        self._recorder.images(self._step)
        return seconds


def _number(value):
    return None if value is None else float(value)
