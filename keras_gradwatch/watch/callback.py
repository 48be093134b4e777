"""`GradWatch`: the Keras callback that watches gradients during `fit`.

This module holds the Keras hooks and the wiring; the work is done by:
`_schedule` (when to measure, the time budget), `_train_step` (what is read
from or added to the train step), `_probe` (the batch measured on),
`measurement` (the measurement), `_checks` (the evidence each step's logs,
each measurement and each epoch end give the detectors) with `_detectors`
(the detectors, and the registry of alert kinds), `_alerting` and `alerts`
(making and acting on an alert),
`_recorder` (the run records), `_drawing` (when plots are drawn) and
`_model_facts`.
"""

import contextlib
import dataclasses
import html
import math
import pathlib
import time
import warnings
import weakref

import keras

from keras_gradwatch.core import _compat
from keras_gradwatch.core import _probe
from keras_gradwatch.core import _train_step
from keras_gradwatch.core import _update_ratio
from keras_gradwatch.core import alerts as alerts_lib
from keras_gradwatch.core import measurement
from keras_gradwatch.core import stats
from keras_gradwatch.core._detectors.base import Settings
from keras_gradwatch.core.errors import GradientAlertError
from keras_gradwatch.core.errors import NotMeasurableError
from keras_gradwatch.runs import records
from keras_gradwatch.watch import _advice
from keras_gradwatch.watch import _alerting
from keras_gradwatch.watch import _autoclip
from keras_gradwatch.watch import _checks
from keras_gradwatch.watch import _drawing
from keras_gradwatch.watch import _learning_rate
from keras_gradwatch.watch import _model_facts
from keras_gradwatch.watch import _model_runs
from keras_gradwatch.watch import _recorder
from keras_gradwatch.watch import _rollback
from keras_gradwatch.watch import _run_state
from keras_gradwatch.watch import _sanity
from keras_gradwatch.watch import _schedule
from keras_gradwatch.watch import _settings
from keras_gradwatch.watch import _workers

PLOT_MODES = _settings.PLOT_MODES
PROBE_ROWS = _probe.PROBE_ROWS


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
      default before the first update, then as often as keeps the
      callback's CPU time within `overhead` of the training's: first at
      steps 1, 2, 4, 8..., halfway through and at the end of every epoch,
      then at any step;
    - alerts (`"nonfinite"`, `"exploding"`, `"vanishing"`, `"truncation"`)
      that state the evidence they rest on, with a concrete suggestion,
      acted on per kind, rate-limited (see `keras_gradwatch.alerts` and
      docs/gradwatch.md);
    - run records in `log_dir` (see `keras_gradwatch.records`), and the plots
      and `report.html` drawn from them: at the end of a `fit` when the time
      budget allows (or it ended early), and in any case when the process
      exits; `draw()` draws them at any time. The summary says how long
      GradWatch itself took, and its share of the time in `fit`.

    Keys it adds to the logs, so to `History` (code that loops over
    `history.history` sees them next to the loss and metrics): `grad_norm`
    only, on models whose train step it can extend (stock `train_step`) and
    on `TruncatedBPTT` models (which also log `skipped_updates`, and
    `window` with `window="auto"`); per epoch, the value of the epoch's
    last step (Keras keeps a step's own logs as they are). The
    measurements (decay rate, horizon, probe-batch norms) are in the
    records and the report, not in the logs: a decay rate of 2.5 in the
    progress bar, without its profile and the alerts' verdict, reads as an
    alarm it is not.

    It changes nothing in training: weights after `fit` are the same with or
    without it (unless asked to: `clip="auto"`, and the `"clip"` and
    `"rollback"` actions, change training by design). Reused over several `fit` calls, it continues one run, with a
    continuing step count; a `log_dir` holding an earlier run is continued,
    never overwritten.

    Args:
        log_dir: Run folder (created; an unwritable folder is an error at
            train begin, before any step).
        every: Measure at step 0 and every `every` steps, and at no other
            step. Default None: the schedule above.
        overhead: Share of the training's CPU time the callback may take
            (default 0.03), all its work counted; measuring and drawing
            keep a third of it even when the checks of every step take
            more (small models with steps of a few ms). One-off costs
            (tracing the measurement, once per model and probe shape) are
            not charged to it.
        probe_data: `(x, y)`, `(x, y, sample_weight)` or `x` to measure
            on. Default: the first `PROBE_ROWS` (16) sequences of the first
            training batch, with their sample weights.
        loss: Loss of the measurements; defaults to the model's training
            objective (compiled losses with their weights, `add_loss`
            terms, regularisation). A model without one is not measured:
            the warning and `measurement_error` in `summary.json` say why.
        loss_steps: `"last"` (default) or `"all"`, see `measure`.
        nonfinite: Action on NaN/Inf: `"stop"` (default), `"warn"`,
            `"raise"`, a callable taking the `Alert`, None (off), or
            `"rollback"` (see `exploding`).
        exploding: Action on exploding gradients (default `"warn"`), or
            `"clip"`: warn, and start adaptive clipping (see `clip`; it
            cannot bound the step of an adaptive optimizer such as Adam),
            or `"rollback"`: warn, go back to the last healthy weights and
            optimizer state, lower the learning rate 10x, and train on
            (the rescue from a learning rate too high, which clipping does
            not give with adaptive optimizers; see `docs/clipping.md`).
            Each rollback is in the alert's message and in `summary.json`
            (`rollbacks`). Opt-in: no other action changes training.
        vanishing: Action on vanishing gradients (default `"warn"`).
        actions: Dict of the actions of the other kinds, e.g.
            `{"truncation": None}` (default: each kind's default, `"warn"`
            for `"truncation"`).
        spike_factor: A loss above `spike_factor` times the highest of its
            last 100 steps in the same `fit` call is a jump (exploding); a
            gradient norm above `spike_factor` times the 90th percentile of
            its last 100 values is a spike, exploding only when the loss
            then rises above its recent level or turns non-finite within 3
            steps (default 10).
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
            many consecutive measurements (default 3), not counting those of
            the first epoch or of the first 200 optimizer updates, and the
            loss has stalled (the validation loss, else the epoch-mean
            training loss, not 1 % below its best earlier epoch).
        threshold: Relative threshold of the `horizon` statistic.
        tolerance: Tolerance of the `suggested_window` statistic (and of
            the span a `truncation` alert suggests).
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
        clip: `"auto"`: clip every update's gradients at `clip_percentile`
            of the global norms of the updates before it (AutoClip,
            Seetharaman et al. 2020), inside the compiled step, for plain
            models and each `TruncatedBPTT` window update. None (default):
            no clipping, unless `exploding="clip"` (warn, and clip from the
            first exploding alert on). Under a multi-replica strategy, the
            norms are those of the all-reduced gradient.
        clip_percentile: The percentile, in (0, 100]; default 90: a healthy
            run's updates above the 90th percentile of the norms before
            them, about one in ten, are clipped, a spike back to that level.

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
    ['grad_norm', 'loss']
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
        actions=None,
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
        clip=None,
        clip_percentile=_autoclip.DEFAULT_PERCENTILE,
    ):
        # Kept to start a fresh run, with the same settings, for another model.
        arguments = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        _compat.require_tensorflow_backend("GradWatch")
        if _compat.multi_worker_config():  # fit needs them before any callback
            _compat.fix_multi_worker()
        actions = _settings.check(
            log_dir=log_dir, every=every, overhead=overhead, loss_steps=loss_steps,
            nonfinite=nonfinite, exploding=exploding, vanishing=vanishing,
            spike_factor=spike_factor, warmup=warmup, max_grad_norm=max_grad_norm,
            max_decay_rate=max_decay_rate, vanishing_fraction=vanishing_fraction,
            vanishing_patience=vanishing_patience, plots=plots, tensorboard=tensorboard,
            clip=clip, clip_percentile=clip_percentile, actions=actions,
        )
        super().__init__()
        self._arguments = arguments
        self._model_runs = _model_runs.ModelRuns(log_dir)  # one run folder per model
        self._watched = None  # weak reference to the model this run records
        self._measure_retry = False  # the measurement failed on this probe batch only
        self.log_dir = log_dir
        self.every = every
        self.overhead = overhead
        self.probe_data = probe_data
        self.loss = loss
        self.loss_steps = loss_steps
        self.nonfinite = nonfinite
        self.exploding = exploding
        self.vanishing = vanishing
        self.actions = actions
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
        self.clip = clip
        self.clip_percentile = float(clip_percentile)

        self.alerts = []  # every reported Alert
        self.last_measurement = None
        self._recorder = _recorder.RunRecorder(log_dir, tensorboard)
        self._line = alerts_lib.ProgressLine()  # the progress bar's line
        self._bar = False  # fit(verbose=1) draws a progress bar
        self._desk = _alerting.AlertDesk(
            actions, record=self._record_alert, stop=self._stop_training,
            where=lambda: (self._step, max(self._epoch, 0)), clip=self._start_clipping,
            diagnose=self._first_nonfinite_layer, line=self._line,
            rollback=self._roll_back,
        )
        self._clipper = None  # AutoClip, with clip="auto" or exploding="clip"
        self._clip_note = None  # why clipping cannot bound the step, if it cannot
        self._clip_warned = False
        self._rollback = None  # _rollback.Rollback, with a "rollback" action
        self._rollbacks = []  # every rollback of the run, for the summary
        self._learning_rate = None  # _learning_rate.LearningRateReader
        self._readings = None  # _train_step.StepReadingsFunction, when the step reads
        self._step_readings = None  # the latest step's _train_step.StepReadings
        self._schedule = _schedule.MeasurementSchedule(every)
        self._run = _run_state.RunState(log_dir, overhead)  # budget, drawing at exit
        self._started = False  # a first fit has begun (records resumed)
        self._status = "running"
        self._own = _schedule.OwnTime()  # GradWatch's own time, for the summary
        self._hook = None
        self._fits = []
        self._workers = None  # _workers.Workers, under a multi-worker strategy
        # Where the run is.
        self._step = 0
        self._epoch = -1
        self._batch = -1  # last batch index seen in the epoch
        # Measurements.
        self._probe = None
        self._measurements = 0
        self._measured_step = None
        self._measure_error = None
        self._sanity = _sanity.Sanity()  # measurements against the steps' grad_norm
        self._probe_retakes = 0  # probe batches replaced: they measured nothing
        self._suspect_warned = False
        # The detectors, and the evidence of steps, measurements and epochs.
        self._checks = _checks.Checks(self._desk, Settings(
            spike_factor=self.spike_factor, warmup=warmup, max_grad_norm=max_grad_norm,
            max_decay_rate=self.max_decay_rate, vanishing_fraction=self.vanishing_fraction,
            vanishing_patience=vanishing_patience, tolerance=tolerance,
        ))
        self._facts = {}
        self._ratios = None  # update-to-weight ratios, from the first fit on
        self._epoch_started = None  # (time, step) when the epoch began

    # Lifecycle --------------------------------------------------------------

    # A non-chief worker's temporary folder (see `_join_workers`).
    _worker_folder = None

    def on_train_begin(self, logs=None):
        self._join_workers()
        self._follow_model()
        self._run.budget.start_fit()
        self._own.start_fit()
        with self._timed():
            self._train_begin()

    def _join_workers(self):
        """Under a multi-worker strategy, only the chief writes `log_dir`:
        another worker keeps its records in a temporary folder (`_workers`)."""
        workers = _workers.for_strategy(self.model.distribute_strategy)
        if workers is not None and not workers.chief and self._worker_folder is None:
            model, params, folder = self.model, self.params, workers.folder(self)
            self.__init__(**{**self._arguments, "log_dir": folder, "plots": None,
                             "tensorboard": False})
            self.set_model(model)
            self.set_params(params)
            self._worker_folder = folder
        self._workers = workers

    def _agree_actions(self, raised=False):
        """Under a multi-worker strategy: an alert action taken on one worker
        (stop, raise, clip) is taken on all, at this step."""
        if self._workers is None:
            return
        clipping = self._clipper is not None and self._clipper.is_on()
        stop, peer_raised, clip = self._workers.agree_actions(
            self.model.stop_training, raised, clipping, self._run.budget)
        if peer_raised and not raised:
            self._line.end()
            warnings.warn(f"GradWatch: another worker raised an alert at step {self._step} "
                          "(its error says which); this worker stops training there.",
                          stacklevel=alerts_lib._user_stacklevel())
        if stop or (peer_raised and not raised):
            self.model.stop_training = True
        if clip and not clipping:
            self._clipper.switch_on()

    def _follow_model(self):
        """A model other than the last `fit`'s gets a run of its own (see
        `_model_runs`): the same settings, a fresh state, its own folder."""
        inner = _model_facts.inner(self.model)
        folder, _ = self._model_runs.folder_for(inner)
        if self._watched is None or self._watched() is inner:
            self._watched = weakref.ref(inner)
            return
        model, params, runs, said = self.model, self.params, self._model_runs, self.alerts
        self.__init__(**{**self._arguments, "log_dir": folder})
        self.set_model(model)
        self.set_params(params)
        self._model_runs, self.alerts = runs, said
        self._watched = weakref.ref(inner)

    def _train_begin(self):
        if self._measure_retry:
            # It failed on the last fit's probe batch (e.g. another input
            # shape): this fit's first batch is measured afresh.
            self._measure_error, self._measure_retry = None, False
            if self.probe_data is None:
                self._probe = None
        self._recorder.open()
        if not self._started or self._recorder.continued_elsewhere:
            self._resume()
            self._started = True
        self._status = "running"
        verbose = (self.params or {}).get("verbose")
        self._bar = verbose in (1, "auto") and keras.config.is_interactive_logging_enabled()
        self._line.open = False
        self._checks.begin_fit(self.model, self._step)
        self._sanity.new_fit()
        if self._ratios is None or self._ratios.model is not _model_facts.inner(self.model):
            self._ratios = _update_ratio.UpdateRatios(_model_facts.inner(self.model))
        # The first update is compared too: a first step too large for the
        # layer shows there before the loss moves.
        self._ratios.snapshot(_model_facts.iterations(self.model))
        inner = _model_facts.inner(self.model)
        self._facts = _model_facts.layer_facts(inner)
        self._desk.optimizer = _model_facts.optimizer_name(self.model)
        self._desk.family = _learning_rate.family(self.model.optimizer)
        if "rollback" in self._desk.dispatcher.actions.values():
            # First: it may wrap a schedule, which the step must be traced with.
            self._rollback = _rollback.Rollback(self.model, self._step, self._rollbacks)
        if self._learning_rate is None or not self._learning_rate.reads(self.model.optimizer):
            self._learning_rate = _learning_rate.LearningRateReader(self.model.optimizer)
        if self.clip == "auto" or self.exploding == "clip":
            self._clip_note = _advice.clip_note(self._desk.family, self._desk.optimizer)
        if self._probe is None:
            self._probe = (
                _probe.split(self.probe_data, self.model.distribute_strategy)
                if self.probe_data is not None
                else None  # the hook takes the first training batch
            )
        self._fits.append({"started": time.time(), "first_step": self._step})
        self._recorder.write_settings(
            _settings.record(
                self, self.model.name, _model_facts.tbptt_settings(self.model),
                self._desk.dispatcher.actions, self._fits,
                optimizer={"name": self._desk.optimizer, "family": self._desk.family,
                           "clip_note": self._clip_note},
            )
        )
        if self.clip == "auto" or self.exploding == "clip":
            self._install_clipping()
        if not _model_facts.is_tbptt(self.model):  # it logs grad_norm itself
            _train_step.log_grad_norm(self.model)
        function = self.model.train_function
        self._readings = function if isinstance(function, _train_step.StepReadingsFunction) \
            else None
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
        self._line.open = False  # the previous epoch's bar ended its line
        self._checks.new_epoch()
        self._epoch_started = (time.perf_counter(), self._step)

    def on_train_batch_end(self, batch, logs=None):
        logs = logs or {}
        with self._timed():
            previous = self._step
            self._step += max(1, batch - self._batch)
            self._batch = batch
            try:
                self._check_step(logs)
                self._sanity.add_step(logs.get("grad_norm"))
                reason = None
                if self._probe is not None and self._measure_error is None:
                    reason = self._schedule.due(
                        self._step,
                        previous,
                        batch,
                        self.params.get("steps") if self.params else None,
                        self._scheduling_budget(),
                        reserve_drawing=self.plots is not None,
                    )
                    if reason:
                        self._measure(reason)
                if reason or self._ratios.every_step:
                    # The next step's update is compared with it.
                    self._ratios.snapshot(self._iterations())
                self._agree_actions()
            except GradientAlertError:
                self._agree_actions(raised=True)
                self._finish("raised")
                raise
            finally:
                # The progress bar draws this step next, on a line it keeps open.
                self._line.open = self._bar

    def on_epoch_end(self, epoch, logs=None):
        with self._timed():
            self._epoch_end(logs if logs is not None else {})

    def _epoch_end(self, logs):
        self._checks.epoch_end(max(self._epoch, 0), logs)
        started, first_step = self._epoch_started or (None, None)
        if started is not None and self._step > first_step:
            self._ratios.decide((time.perf_counter() - started) / (self._step - first_step))
        if self._probe is not None and self._measure_error is None:
            reason = self._schedule.epoch_end(
                self._step, self._measured_step, self._scheduling_budget())
            if reason:
                try:
                    self._measure(reason)
                except GradientAlertError:
                    self._agree_actions(raised=True)
                    self._finish("raised")
                    raise
        self._agree_actions()
        # The logs (progress bar, History) get nothing more: a decay rate or
        # a probe-batch norm read there without the profile, the alerts'
        # verdict or the batch size misleads. They are in the records.
        self._recorder.write_summary(self.summary())  # summary() flushes the steps
        if self.plots == "epoch" and self._run.budget.can_draw():
            self._draw()

    def on_train_end(self, logs=None):
        self._line.open = False  # the progress bar ended its line at the epoch end
        with self._timed():
            self._finish("stopped" if self.model.stop_training else "completed")

    def _scheduling_budget(self):
        """The budget measurements are scheduled by: the chief's, on every
        worker of a multi-worker strategy (the same steps everywhere)."""
        budget = self._run.budget
        return budget if self._workers is None else self._workers.budget(budget)

    @contextlib.contextmanager
    def _timed(self):
        """Counts and charges the time spent inside the callback (outermost
        calls): to the run's own time, and to the budget."""
        if not self._own.enter():
            yield
            return
        try:
            yield
        finally:
            seconds = self._own.leave()
            if self._started:
                heavy = self._own.heavy_block
                # Heavy work that waits (a GPU) is charged its wall time, so
                # that it cannot stretch training beyond the overhead either.
                charged = max(seconds, self._own.block_wall) if heavy else seconds
                self._run.budget.charge(charged, heavy=heavy)

    # Per-step checks ----------------------------------------------------------

    def _iterations(self):
        """The optimizer's update count, as the step read it if it did."""
        readings = self._step_readings
        if readings is not None and readings.iterations is not None:
            return readings.iterations
        return _model_facts.iterations(self.model)

    def _check_step(self, logs):
        readings = self._step_readings = (
            self._readings.take() if self._readings is not None else None)
        rate = self._learning_rate.read(readings)
        self._desk.learning_rates.add(self._step, rate)
        alerts_before = sum(self._desk.counts.values())
        ratios = updates = None
        if self._ratios.pending:
            updates = self._ratios.updates(self._iterations())
            ratios = self._ratios.ratios()
        self._checks.step(
            logs, self._step, self._epoch, self._batch,
            add_step=self._recorder.add_step, update_ratios=ratios, step_updates=updates,
            clip=self._clipper.state() if self._clipper is not None else None,
            lr=rate, readings=readings,
        )
        if self._rollback is not None:
            loss = logs.get("loss")
            healthy = sum(self._desk.counts.values()) == alerts_before and (
                loss is None or math.isfinite(float(loss))
            ) and not self._checks.suspect
            self._rollback.after_step(self._step, healthy)

    def _roll_back(self):
        """The "rollback" action; returns the sentence saying what it did."""
        if self._rollback is None:
            return ""
        sentence, stop = self._rollback.roll_back(self._step)
        if stop:
            self._stop_training()
            return sentence
        self._learning_rate.forget()
        if self._ratios.pending:
            self._ratios.snapshot()  # the next update is compared with the restored weights
        return sentence

    # Adaptive clipping ----------------------------------------------------------

    def _install_clipping(self):
        self._clipper = _autoclip.for_model(
            self.model, self.clip_percentile, active=self.clip == "auto",
        )
        self._clipper.install()
        if self._clip_note is not None and not self._clip_warned:
            self._clip_warned = True  # once per callback, not once per fit
            warnings.warn(f"GradWatch(clip={self.clip!r}, exploding={self.exploding!r}): "
                          + self._clip_note, stacklevel=alerts_lib._user_stacklevel())

    def _start_clipping(self):
        """The "clip" action: switches AutoClip on (no new trace)."""
        if self._clipper is None:
            return ""
        sentence = self._clipper.switch_on()
        if self._clip_note is not None:
            sentence += (f" (It cannot bound the step of {self._desk.optimizer}: "
                         "lower the learning rate, or use exploding='rollback'.)")
        return sentence

    # Measurements -------------------------------------------------------------

    def _take_probe(self, batch):
        self._probe = _probe.from_batch(batch, self.model.distribute_strategy)
        if self._measurements == 0 or self._probe_retakes:
            with self._timed():
                self._measure("start" if self._measurements == 0 else "new-probe")

    def _measure(self, reason, check=True):
        self._own.heavy()
        start, cpu_start = time.perf_counter(), time.process_time()
        traces = measurement._traces(self.model)
        x, y, sample_weight = self._probe
        try:
            result = measurement._measure(
                self.model, x, y, sample_weight=sample_weight, loss=self.loss,
                loss_steps=self.loss_steps, window=None, threshold=self.threshold,
                tolerance=self.tolerance, gradient_norms=True, profiles=None,
            )
        except Exception as error:  # noqa: BLE001 - never break training
            self._measure_error = measurement.not_measured(error)
            self._measure_retry = not isinstance(error, NotMeasurableError)
            self._line.end()
            warnings.warn(
                "GradWatch does not measure this model; it only checks the "
                + ("logs until this fit ends (the next fit measures on its own "
                   "first batch). " if self._measure_retry else "logs from now on. ")
                + self._measure_error,
                stacklevel=alerts_lib._user_stacklevel(),
            )
            return None
        suspect = self._sanity.judge(result.global_norm)
        if suspect is None:
            suspect = self._measured_nothing(result)
        if suspect is not None:
            result = dataclasses.replace(result, suspect=suspect)
            if not self._suspect_warned:
                self._suspect_warned = True
                warnings.warn(
                    f"GradWatch: the measurement at step {self._step} is marked "
                    f"suspect, not reported as a profile: {suspect}.",
                    stacklevel=alerts_lib._user_stacklevel(),
                )
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        traced = measurement._traces(self.model) > traces
        self._run.budget.measured(max(cpu, seconds), traced, cpu)
        if traced:
            self._own.one_off(seconds, cpu)
        self.last_measurement = result
        self._recorder.add_measurement(
            result, index=self._measurements, step=self._step, epoch=max(self._epoch, 0),
            reason=reason, seconds=seconds, traced=traced,
        )
        self._measurements += 1
        self._measured_step = self._step
        if check and suspect is None:
            self._checks.measurement(
                result, self._step, max(self._epoch, 0),
                updates=_model_facts.iterations(self.model),
                backprop=getattr(self.model, "backprop", None),
                facts=self._facts,
                inputs_finite=lambda: _probe.is_finite(self._probe)
                and _model_facts.weights_finite(_model_facts.inner(self.model)),
            )
        return result

    def _measured_nothing(self, result):
        """Why a measurement measured nothing (a fully masked probe batch),
        or None; the next training batch then becomes the probe batch
        (unless `probe_data` was given: the user chose it)."""
        reason = _sanity.measured_nothing({n: r.profile for n, r in result.layers.items()},
                                          empty_inputs=_probe.is_empty(self._probe))
        if reason is None:
            return None
        if self.probe_data is None and self._probe_retakes < _probe.RETAKES:
            self._probe_retakes += 1
            self._probe = None  # the hook takes the next batch
            return reason + "; the next training batch is taken as the probe batch"
        return reason

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

    def _repr_html_(self):
        """The run as a notebook shows it when a cell ends with the callback:
        its records so far, with the plots redrawn (see `records.Run`)."""
        if not self._started:
            return (f"<p>GradWatch({html.escape(str(self.log_dir))}): no training "
                    "yet; add it to <code>fit(callbacks=[...])</code>.</p>")
        self._recorder.write_summary(self.summary())
        self.draw()
        return records.load_run(self.log_dir).summary_html()

    def summary(self):
        """The run's figures, as written to `summary.json`.

        Computed from the records as they are written (`records.Totals`),
        with this callback's status and its count of every alert.
        """
        self._recorder.flush()
        summary = self._recorder.totals.summary(self._status)
        summary.update(
            alerts={kind: self._desk.counts[kind] for kind in alerts_lib.KINDS},
            rollbacks=list(self._rollbacks),
            clip_note=self._clip_note,
            measurement_error=self._measure_error,
            own_time=self._own.totals(),
            updated=time.time(),
        )
        if self.model is not None and getattr(self.model, "auto_window", False):
            # TruncatedBPTT(window="auto"): its latest decision, and whether
            # it sits at max_window with more than its tolerance cut off.
            decisions = self.model.window_decisions
            summary["auto_window"] = decisions[-1] if decisions else None
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
        from keras_gradwatch.runs import report

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
        self._own.resume(resumed.own_time)
        self._run.resume(resumed.own_time)
        self._desk.counts.update(resumed.alert_counts)

    def _step_failed(self, error):
        self._finish("raised" if isinstance(error, GradientAlertError) else "interrupted")

    def _finish(self, status):
        if self._hook is None and self._status != "running":
            return  # finished already (an error inside a step, then train end)
        self._status = status
        self._run.budget.end_fit()
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        if self._clipper is not None:
            self._clipper.remove()
        if self._rollback is not None:
            self._rollback.end()
            self._rollback = None
        self._recorder.write_summary(self.summary())  # summary() flushes the steps
        self._recorder.close()
        if self.plots is not None:
            try:
                self._draw_at_end()
            except KeyboardInterrupt:
                self._defer_drawing()  # a second Ctrl-C: draw at exit
        # The drawing is part of the fit: the final figures count it.
        self._own.end_fit()
        self._recorder.write_summary(self.summary())
        self._recorder.release()  # another writer may have the folder now

    def _draw_at_end(self):
        """Draws now if the budget allows (or, in an interactive session,
        if the last drawing is a minute old); otherwise when the process
        exits, also when training ended early (a short fit stopped by an
        alert would pay a second of drawing for a few seconds of training)."""
        budget = self._run.budget
        stale = budget.since_drawing() > _drawing.INTERACTIVE_SECONDS
        if budget.can_draw() or (stale and _drawing._interactive()):
            self._draw()
        else:
            self._defer_drawing()

    def _defer_drawing(self):
        self._run.drawing.defer(self._recorder.images_later(self._step))

    def _draw(self):
        self._own.heavy()
        cpu_start = time.process_time()
        seconds = _drawing.draw(self.log_dir)
        if seconds is None:
            return None
        self._run.drawing.drawn()
        self._run.budget.drew(max(time.process_time() - cpu_start, seconds))
        self._recorder.images(self._step)
        return seconds
