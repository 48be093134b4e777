"""Private: the engine of `GradWatch`, without the Keras callback protocol.

`GradWatch` (callback.py) is the adapter: Keras calls its `on_*` methods,
which call `WatchEngine`'s `begin_fit`, `epoch_begin`, `batch_end`,
`epoch_end` and `end_fit`. The engine does the work with: `_schedule`
(when to measure, the time budget), `_train_step` (what is read from or
added to the train step), `_measuring` (the probe batch and the
measurements), `_checks` (the evidence each step's logs, each measurement
and each epoch end give the detectors), `_alerting` (making and acting on
an alert), `_interventions` (clipping, rollback), `_recorder` (the run
records), `_finishing` (the summary, the end of a fit, the drawing) and
`_workers` (one run over the workers of a multi-worker strategy).
"""

import contextlib
import time
import warnings

from keras_gradwatch.core import _train_step
from keras_gradwatch.core import _update_ratio
from keras_gradwatch.core import alerts as alerts_lib
from keras_gradwatch.core._detectors.base import Settings
from keras_gradwatch.core.errors import GradientAlertError
from keras_gradwatch.watch import _alerting
from keras_gradwatch.watch import _checks
from keras_gradwatch.watch import _finishing
from keras_gradwatch.watch import _interventions
from keras_gradwatch.watch import _learning_rate
from keras_gradwatch.watch import _measuring
from keras_gradwatch.watch import _model_facts
from keras_gradwatch.watch import _recorder
from keras_gradwatch.watch import _run_state
from keras_gradwatch.watch import _schedule
from keras_gradwatch.watch import _settings


class WatchEngine:
    """One run of a `GradWatch`: its state, and what each moment of `fit` does.

    Args:
        settings: The `_settings.WatchSettings`.
        alerts: The list every reported `Alert` is appended to.

    Attributes:
        model: The model of the current `fit` (set by `begin_fit`).
        step, epoch: Where the run is (its steps continue over fits).
        measurer: The `_measuring.Measurer`.
        interventions: The `_interventions.Interventions`.
        run: The `_run_state.RunState` (budget, drawing at exit).
        workers: `_workers.Workers` under a multi-worker strategy, or None.
    """

    def __init__(self, settings, alerts):
        self.settings = settings
        self.alerts = alerts
        self.model = None
        self.workers = None
        self.recorder = _recorder.RunRecorder(settings.log_dir, settings.tensorboard)
        self.line = alerts_lib.ProgressLine()  # the progress bar's line
        self._bar = False  # fit(verbose=1) draws a progress bar
        self.measurer = _measuring.Measurer(self)
        self.interventions = _interventions.Interventions(self)
        self.desk = _alerting.AlertDesk(
            settings.actions_by_kind, record=self._record_alert, stop=self.stop_training,
            where=lambda: (self.step, max(self.epoch, 0)),
            clip=self.interventions.start_clipping,
            diagnose=self.measurer.first_nonfinite_layer, line=self.line,
            rollback=self.interventions.roll_back,
        )
        self.learning_rate = None  # _learning_rate.LearningRateReader
        self._readings = None  # _train_step.StepReadingsFunction, when the step reads
        self._step_readings = None  # the latest step's _train_step.StepReadings
        self._schedule = _schedule.MeasurementSchedule(settings.every)
        self.run = _run_state.RunState(settings.log_dir, settings.overhead)
        self.started = False  # a first fit has begun (records resumed)
        self.status = "running"
        self.own = _schedule.OwnTime()  # GradWatch's own time, for the summary
        self.hook = None
        self.fits = []
        self.step = 0
        self.epoch = -1
        self._batch = -1  # last batch index seen in the epoch
        self._steps = None  # steps per epoch, if known
        # The detectors, and the evidence of steps, measurements and epochs.
        alerting = settings.alerting
        self.checks = _checks.Checks(self.desk, Settings(
            spike_factor=alerting.spike_factor, warmup=alerting.warmup,
            max_grad_norm=alerting.max_grad_norm, max_decay_rate=alerting.max_decay_rate,
            vanishing_fraction=alerting.vanishing_fraction,
            vanishing_patience=alerting.vanishing_patience,
            tolerance=settings.measuring.tolerance,
        ))
        self.facts = {}
        self.ratios = None  # update-to-weight ratios, from the first fit on
        self._epoch_started = None  # (time, step) when the epoch began
        self.finishing = _finishing.Finishing(self)

    # The moments of a fit ---------------------------------------------------------

    def begin_fit(self, model, steps, bar):
        """A `fit` begins on `model` (`steps` per epoch if known; `bar`:
        whether a progress bar draws each step)."""
        self.model, self._steps, self._bar = model, steps, bar
        self.run.budget.start_fit()
        self.own.start_fit()
        with self.timed():
            self._begin_fit()

    def _begin_fit(self):
        model = self.model
        self.recorder.open()
        if not self.started or self.recorder.continued_elsewhere:
            self._resume()
            self.started = True
        self.status = "running"
        self.line.open = False
        self.checks.begin_fit(model, self.step)
        inner = _model_facts.inner(model)
        if self.ratios is None or self.ratios.model is not inner:
            self.ratios = _update_ratio.UpdateRatios(inner)
        # The first update is compared too: a first step too large for the
        # layer shows there before the loss moves.
        self.ratios.snapshot(_model_facts.iterations(model))
        self.facts = _model_facts.layer_facts(inner)
        self.desk.optimizer = _model_facts.optimizer_name(model)
        self.desk.family = _learning_rate.family(model.optimizer)
        # First: a rollback may wrap a schedule, which the step must be traced with.
        self.interventions.prepare(model)
        if self.learning_rate is None or not self.learning_rate.reads(model.optimizer):
            self.learning_rate = _learning_rate.LearningRateReader(model.optimizer)
        self.measurer.begin_fit(model)
        self.fits.append({"started": time.time(), "first_step": self.step})
        self.recorder.write_settings(_settings.record(
            self.settings, model.name, _model_facts.tbptt_settings(model), self.fits,
            optimizer={"name": self.desk.optimizer, "family": self.desk.family,
                       "clip_note": self.interventions.clip_note},
        ))
        self.interventions.install(model)
        if not _model_facts.is_tbptt(model):  # it logs grad_norm itself
            _train_step.log_grad_norm(model)
        function = model.train_function
        self._readings = function if isinstance(function, _train_step.StepReadingsFunction) \
            else None
        self.hook = _train_step.TrainFunctionHook(
            model,
            wants_probe=lambda: self.measurer.probe is None,
            take_probe=self.measurer.take_probe,
            on_error=self.finishing.step_failed,
        )
        if self.measurer.probe is not None and self.measurer.count == 0:
            self.measurer.measure("start")

    def epoch_begin(self):
        """An epoch begins."""
        self.epoch += 1
        self._batch = -1
        self.line.open = False  # the previous epoch's bar ended its line
        self.checks.new_epoch()
        self._epoch_started = (time.perf_counter(), self.step)

    def batch_end(self, batch, logs):
        """The step of `batch` (its index in the epoch) ended with `logs`."""
        with self.timed():
            previous = self.step
            self.step += max(1, batch - self._batch)
            self._batch = batch
            try:
                self._check_step(logs)
                self.measurer.add_step(logs.get("grad_norm"))
                reason = None
                if self.measurer.ready:
                    reason = self._schedule.due(
                        self.step, previous, batch, self._steps, self._scheduling_budget(),
                        reserve_drawing=self.settings.plots is not None,
                    )
                    if reason:
                        self.measurer.measure(reason)
                if reason or self.ratios.every_step:
                    # The next step's update is compared with it.
                    self.ratios.snapshot(self._iterations())
                self.agree_actions()
            except GradientAlertError:
                self.agree_actions(raised=True)
                self.finishing.finish("raised")
                raise
            finally:
                # The progress bar draws this step next, on a line it keeps open.
                self.line.open = self._bar

    def epoch_end(self, logs):
        """An epoch ended with `logs`."""
        with self.timed():
            self._epoch_end(logs)

    def _epoch_end(self, logs):
        self.checks.epoch_end(max(self.epoch, 0), logs)
        started, first_step = self._epoch_started or (None, None)
        if started is not None and self.step > first_step:
            self.ratios.decide((time.perf_counter() - started) / (self.step - first_step))
        if self.measurer.ready:
            reason = self._schedule.epoch_end(
                self.step, self.measurer.measured_step, self._scheduling_budget())
            if reason:
                try:
                    self.measurer.measure(reason)
                except GradientAlertError:
                    self.agree_actions(raised=True)
                    self.finishing.finish("raised")
                    raise
        self.agree_actions()
        # The logs (progress bar, History) get nothing more: a decay rate or
        # a probe-batch norm read there without the profile, the alerts'
        # verdict or the batch size misleads. They are in the records.
        self.recorder.write_summary(self.finishing.summary())  # flushes the steps
        if self.settings.plots == "epoch" and self.run.budget.can_draw():
            self.finishing.draw()

    def end_fit(self):
        """The `fit` ended (stopped, or completed)."""
        self.line.open = False  # the progress bar ended its line at the epoch end
        with self.timed():
            self.finishing.finish("stopped" if self.model.stop_training else "completed")

    # Timing, workers, per-step checks ---------------------------------------------

    @contextlib.contextmanager
    def timed(self):
        """Counts and charges the time spent inside the callback (outermost
        calls): to the run's own time, and to the budget."""
        if not self.own.enter():
            yield
            return
        try:
            yield
        finally:
            seconds = self.own.leave()
            if self.started:
                heavy = self.own.heavy_block
                # Heavy work that waits (a GPU) is charged its wall time, so
                # that it cannot stretch training beyond the overhead either.
                charged = max(seconds, self.own.block_wall) if heavy else seconds
                self.run.budget.charge(charged, heavy=heavy)

    def _scheduling_budget(self):
        """The budget measurements are scheduled by: the chief's, on every
        worker of a multi-worker strategy (the same steps everywhere)."""
        budget = self.run.budget
        return budget if self.workers is None else self.workers.budget(budget)

    def agree_actions(self, raised=False):
        """Under a multi-worker strategy: an alert action taken on one worker
        (stop, raise, clip) is taken on all, at this step."""
        if self.workers is None:
            return
        clipping = self.interventions.is_clipping()
        stop, peer_raised, clip = self.workers.agree_actions(
            self.model.stop_training, raised, clipping, self.run.budget)
        if peer_raised and not raised:
            self.line.end()
            warnings.warn(f"GradWatch: another worker raised an alert at step {self.step} "
                          "(its error says which); this worker stops training there.",
                          stacklevel=alerts_lib._user_stacklevel())
        if stop or (peer_raised and not raised):
            self.model.stop_training = True
        if clip and not clipping:
            self.interventions.clipper.switch_on()

    def _iterations(self):
        """The optimizer's update count, as the step read it if it did."""
        return _model_facts.iterations(self.model, self._step_readings)

    def _check_step(self, logs):
        readings = self._step_readings = (
            self._readings.take() if self._readings is not None else None)
        iterations = self._iterations()  # read once for every check of the step
        idle = self.desk.optimizer_idle = self.checks.optimizer_idle(self.step, iterations)
        rate = None if idle else self.learning_rate.read(readings)
        self.desk.learning_rates.add(self.step, rate)
        alerts_before = sum(self.desk.counts.values())
        ratios = updates = None
        if self.ratios.pending:
            updates = self.ratios.updates(iterations)
            ratios = self.ratios.ratios()
        self.checks.step(
            logs, self.step, self.epoch, self._batch,
            add_step=self.recorder.add_step, update_ratios=ratios, step_updates=updates,
            clip=self.interventions.clip_state(), lr=rate, readings=readings,
            iterations=iterations,
        )
        healthy = sum(self.desk.counts.values()) == alerts_before and not self.checks.suspect
        self.interventions.after_step(logs, healthy)

    def _record_alert(self, alert):
        self.alerts.append(alert)
        self.recorder.add_alert(alert)

    def stop_training(self):
        """Asks `fit` to stop after this step."""
        self.model.stop_training = True

    def _resume(self):
        """Continues the step count of a run already in `log_dir`."""
        resumed = self.recorder.resume(alerts_lib.KINDS)
        if resumed is None:
            return
        self.step = resumed.step
        self.epoch = resumed.epoch
        self.measurer.resume(resumed.measurements, resumed.measured_step)
        self.fits = resumed.fits
        self.own.resume(resumed.own_time)
        self.run.resume(resumed.own_time)
        self.desk.counts.update(resumed.alert_counts)
