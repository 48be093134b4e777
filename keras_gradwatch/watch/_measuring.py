"""Private: a run's measurements on its probe batch (for `GradWatch`).

The probe batch (from `probe_data`, or taken from a training batch by the
train-function hook, retaken when it measured nothing), each measurement
with its sanity check against the steps' `grad_norm`, its record and the
detectors' evidence, and the diagnosis naming the first non-finite layer.
"""

import dataclasses
import math
import time
import warnings

from keras_gradwatch.core import _probe
from keras_gradwatch.core import alerts as alerts_lib
from keras_gradwatch.core import measurement
from keras_gradwatch.core.errors import NotMeasurableError
from keras_gradwatch.watch import _model_facts
from keras_gradwatch.watch import _sanity


class Measurer:
    """The measurements of one run.

    Args:
        run: The `_engine.WatchEngine` measured for: its settings, model,
            position (`step`, `epoch`), records, budget, checks and own time.

    Attributes:
        probe: The probe batch `(x, y, sample_weight)`, or None until taken.
        count: Measurements of the run so far.
        measured_step: The step of the latest measurement.
        error: Why the model is not measured (`measurement.not_measured`),
            or None.
        last: The latest `Measurement`.
    """

    def __init__(self, run):
        self._run = run
        self.probe = None
        self.count = 0
        self.measured_step = None
        self.error = None
        self.last = None
        self._retry = False  # the measurement failed on this probe batch only
        self._sanity = _sanity.Sanity()  # measurements against the steps' grad_norm
        self._retakes = 0  # probe batches replaced: they measured nothing
        self._suspect_warned = False

    @property
    def ready(self):
        """Whether there is a probe batch and the model is measurable."""
        return self.probe is not None and self.error is None

    def begin_fit(self, model):
        """A `fit` begins: a failed measurement is retried on its batch, the
        probe batch is `probe_data` if given."""
        probe_data = self._run.settings.measuring.probe_data
        if self._retry:
            # It failed on the last fit's probe batch (e.g. another input
            # shape): this fit's first batch is measured afresh.
            self.error, self._retry = None, False
            if probe_data is None:
                self.probe = None
        self._sanity.new_fit()
        if self.probe is None and probe_data is not None:
            self.probe = _probe.split(probe_data, model.distribute_strategy)
        # Otherwise the hook takes the first training batch.

    def add_step(self, grad_norm):
        """A step's `grad_norm`, for the sanity check of measurements."""
        self._sanity.add_step(grad_norm)

    def take_probe(self, batch):
        """The hook's training batch becomes the probe batch."""
        model = self._run.model
        self.probe = _probe.from_batch(batch, model.distribute_strategy)
        if self.count == 0 or self._retakes:
            with self._run.timed():
                self.measure("start" if self.count == 0 else "new-probe")

    def resume(self, count, measured_step):
        """Continues the count of a run already in the folder."""
        self.count, self.measured_step = count, measured_step

    def measure(self, reason, check=True):
        """Measures on the probe batch, records it and (with `check`) gives
        it to the detectors; returns the `Measurement`, or None."""
        run = self._run
        run.own.heavy()
        start, cpu_start = time.perf_counter(), time.process_time()
        traces = measurement._traces(run.model)
        result = self._measured()
        if result is None:
            return None
        suspect = self._sanity.judge(result.global_norm)
        if suspect is None:
            suspect = self._measured_nothing(result)
        if suspect is not None:
            result = dataclasses.replace(result, suspect=suspect)
            self._warn_suspect(suspect)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
        traced = measurement._traces(run.model) > traces
        run.run.budget.measured(max(cpu, seconds), traced, cpu)
        if traced:
            run.own.one_off(seconds, cpu)
        self.last = result
        run.recorder.add_measurement(
            result, index=self.count, step=run.step, epoch=max(run.epoch, 0),
            reason=reason, seconds=seconds, traced=traced,
        )
        self.count += 1
        self.measured_step = run.step
        if check and suspect is None:
            model = run.model
            run.checks.measurement(
                result, run.step, max(run.epoch, 0),
                updates=_model_facts.iterations(model),
                backprop=getattr(model, "backprop", None),
                facts=run.facts,
                inputs_finite=lambda: _probe.is_finite(self.probe)
                and _model_facts.weights_finite(_model_facts.inner(model)),
            )
        return result

    def _measured(self):
        """The measurement on the probe batch, or None (with a warning) if
        the model cannot be measured."""
        run, settings = self._run, self._run.settings.measuring
        x, y, sample_weight = self.probe
        try:
            return measurement._measure(
                run.model, x, y, sample_weight=sample_weight, loss=settings.loss,
                loss_steps=settings.loss_steps, window=None, threshold=settings.threshold,
                tolerance=settings.tolerance, gradient_norms=True, profiles=None,
            )
        except Exception as error:  # noqa: BLE001 - never break training
            self.error = measurement.not_measured(error)
            self._retry = not isinstance(error, NotMeasurableError)
            run.line.end()
            warnings.warn(
                "GradWatch does not measure this model; it only checks the "
                + ("logs until this fit ends (the next fit measures on its own "
                   "first batch). " if self._retry else "logs from now on. ")
                + self.error,
                stacklevel=alerts_lib._user_stacklevel(),
            )
            return None

    def _warn_suspect(self, suspect):
        if not self._suspect_warned:
            self._suspect_warned = True
            warnings.warn(
                f"GradWatch: the measurement at step {self._run.step} is marked "
                f"suspect, not reported as a profile: {suspect}.",
                stacklevel=alerts_lib._user_stacklevel(),
            )

    def _measured_nothing(self, result):
        """Why a measurement measured nothing (a fully masked probe batch),
        or None; the next training batch then becomes the probe batch
        (unless `probe_data` was given: the user chose it)."""
        reason = _sanity.measured_nothing({n: r.profile for n, r in result.layers.items()},
                                          empty_inputs=_probe.is_empty(self.probe))
        if reason is None:
            return None
        if self._run.settings.measuring.probe_data is None and self._retakes < _probe.RETAKES:
            self._retakes += 1
            self.probe = None  # the hook takes the next batch
            return reason + "; the next training batch is taken as the probe batch"
        return reason

    def first_nonfinite_layer(self):
        """Names the first layer (in model order) with broken weights/grads."""
        name = _model_facts.first_nonfinite_layer(_model_facts.inner(self._run.model))
        if name is not None:
            return name, f"First layer affected: '{name}' (its weights are no longer finite)."
        if self.ready:
            result = self.measure("diagnosis", check=False)
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
