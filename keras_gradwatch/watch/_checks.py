"""Private: the checks of one `GradWatch`: evidence in, detectors, findings out.

`Checks` owns the run's detectors (one of each registered in
`_detectors.kinds`, built by `_detectors.build`) and the loss trend, and
turns what the callback sees into `Evidence` at three moments:

- each training step: its own loss (recovered from Keras's running mean),
  its gradient norm, updates skipped for non-finite gradients, and the
  update-to-weight ratios with the number of optimizer updates they span.
  It also writes the step record;
- each measurement on the probe batch: the per-layer gradient norms, the
  depth profile (with the loss trend and the updates so far), and
  for each measured layer its profile, the `TruncatedBPTT` backprop span,
  the optimizer updates so far
  and the latest verdict of the loss trend;
- each epoch end: the epoch's losses feed the loss trend
  (`_detectors.trend`).

Each detector is called at its `moment` when the evidence holds all it
`needs`, and only while its kind is on. The findings of one moment go to
the alert desk causes first (a kind marked `consequence`, the non-finite
values, last).
"""

import math

import numpy as np

from keras_gradwatch.core import _detectors
from keras_gradwatch.core import _train_step
from keras_gradwatch.core._detectors import kinds
from keras_gradwatch.core._detectors import trend as trend_lib
from keras_gradwatch.core._detectors.base import Evidence
from keras_gradwatch.core._detectors.base import LayerFacts
from keras_gradwatch.watch import _model_facts


class Checks:
    """The detectors of one `GradWatch` and the evidence they are given.

    Args:
        desk: The callback's `_alerting.AlertDesk`.
        settings: The detectors' `_detectors.Settings`.
    """

    def __init__(self, desk, settings):
        self.desk = desk
        self.detectors = _detectors.build(settings)
        self.trend = trend_lib.LossTrend()
        # Kinds whose findings are reported after the others' of a moment.
        self._consequences = {spec.name for spec in kinds.KINDS if spec.consequence}
        self.norm_logged = False  # a step's logs held grad_norm
        self.skipped = None  # updates skipped so far, when known
        self._skipped_before = 0
        self._step_loss = None
        self._model = None
        self._step_at_begin = 0
        self._iterations_at_begin = 0

    def begin_fit(self, model, step):
        """A `fit` begins at `step`: its steps are compared with each other
        (a curriculum's next stage may train on other data), after a
        warm-up of their own."""
        self._model = model
        self._skipped_before = self.skipped or 0
        self.skipped = None
        self._step_at_begin = step
        self._iterations_at_begin = _model_facts.iterations(model)
        self._step_loss = _train_step.StepLoss(model)
        for detector in self.detectors:
            detector.begin_fit()

    def optimizer_idle(self, step, iterations):
        """Whether the model's optimizer made no update in this `fit` after
        two steps or more (`iterations`: its update count now): a custom
        `train_step` applies optimizers of its own (a GAN's), so the
        compiled one's learning rate is not training's."""
        if step - self._step_at_begin < 2 or self._model is None:
            return False
        return iterations == self._iterations_at_begin

    def new_epoch(self):
        if self._step_loss is not None:
            self._step_loss.new_epoch()

    def step(self, logs, step, epoch, batch, add_step, update_ratios=None,
             step_updates=None, clip=None, lr=None, readings=None, iterations=None):
        """Records a step and checks what its logs show.

        Args:
            logs: The step's logs.
            step: The run's step count, this step included.
            epoch: The run's epoch.
            batch: The step's batch index in the epoch.
            add_step: Function that records the step's record (a dict).
            update_ratios: This step's update-to-weight ratio by layer
                (`_update_ratio`), when taken.
            step_updates: The optimizer updates those ratios span.
            clip: With adaptive clipping, `(threshold, clipped updates so
                far)` after this step (threshold None while it is off).
            lr: The learning rate of the step's update, when known.
            readings: What the step read of the model
                (`_train_step.StepReadings`), when it did.
            iterations: The optimizer's update count after the step, if
                read already (else read here).
        """
        if iterations is None:
            iterations = _model_facts.iterations(self._model, readings)
        instant = self._step_loss(_number(logs.get("loss")), batch, readings)
        grad_norm = _number(logs.get("grad_norm"))
        self.norm_logged = self.norm_logged or grad_norm is not None
        skipped = logs.get("skipped_updates")
        skipped = None if skipped is None else int(skipped)
        scaled = _model_facts.loss_scaled(self._model)
        if skipped is None and scaled:
            # A LossScaleOptimizer skips non-finite steps without counting
            # them: they are the steps its iterations did not advance.
            applied = iterations - self._iterations_at_begin
            skipped = self._skipped_before + (step - self._step_at_begin) - applied
        add_step(
            {
                "step": step,
                "epoch": epoch,
                "loss": instant,
                "grad_norm": grad_norm,
                "skipped_updates": skipped,
                **({"window": int(logs["window"])} if "window" in logs else {}),
                **({"update_ratios": update_ratios} if update_ratios else {}),
                **({"updates": step_updates} if update_ratios and step_updates else {}),
                **({"clip": clip[0], "clipped_updates": clip[1]} if clip else {}),
                **({"lr": lr} if lr is not None else {}),
            }
        )
        new_skips = None
        if skipped is not None:
            new_skips = 0 if self.skipped is None else skipped - self.skipped
            self.skipped = skipped
        if grad_norm is not None and math.isfinite(grad_norm):
            self.desk.step_norms.add(grad_norm)
        self.run(Evidence(
            "step", step, epoch, updates=iterations,
            loss=instant, logged_losses=_logged_losses(logs), grad_norm=grad_norm,
            new_skips=new_skips, loss_scaled=scaled, lr=lr,
            update_ratios=update_ratios or None, step_updates=step_updates,
        ))

    def measurement(self, result, step, epoch, *, updates=None, backprop=None, facts=None,
                    inputs_finite=None):
        """Checks a measurement (`measurement.Measurement`).

        Args:
            result: The measurement.
            step: The training step it was taken at.
            epoch: The run's epoch.
            updates: Optimizer updates applied so far in the run.
            backprop: `TruncatedBPTT`'s backprop span, or None.
            facts: The `LayerFacts` of the model's recurrent layers, by name.
            inputs_finite: Function returning whether the weights and the
                probe batch are finite (called only if a gradient is not).
        """
        norms = result.layer_norms or {}
        broken = any(not math.isfinite(v) for v in norms.values())
        if result.global_norm is not None and math.isfinite(result.global_norm):
            self.desk.measured_norms.add(result.global_norm)
            if not self.norm_logged:
                # Without every step's norm, the probe batch's is the signal.
                self.run(Evidence("step", step, epoch, grad_norm=result.global_norm,
                                  norm_source="probe"))
        self.run(Evidence(
            "measurement", step, epoch, updates=updates, layer_norms=result.layer_norms,
            inputs_finite=inputs_finite() if broken and inputs_finite else None,
            depth=getattr(result, "depth", None), trend=self.trend.latest,
        ))
        for name, record in result.layers.items():
            self.run(Evidence(
                "layer", step, epoch, updates=updates, layer_norms=result.layer_norms,
                layer=name, profile=record,
                facts=(facts or {}).get(name.split("#")[0], LayerFacts()),
                backprop=backprop, trend=self.trend.latest,
            ))

    def epoch_end(self, epoch, logs):
        """An epoch ended: its losses feed the loss trend."""
        self.trend.epoch_end(epoch, _number(logs.get("loss")), _number(logs.get("val_loss")))

    @property
    def suspect(self):
        """Whether a detector waits to confirm a possible blow-up (a loss
        jump or norm spike): the model may be damaged."""
        return any(getattr(detector, "suspect", False) for detector in self.detectors)

    def run(self, evidence):
        """Hands `evidence` to the detectors of its moment; reports findings."""
        found = []
        for detector in self.detectors:
            if detector.moment != evidence.moment or not self.desk.active(detector.kind):
                continue
            if any(getattr(evidence, need) is None for need in detector.needs):
                continue
            finding = detector.check(evidence)
            if finding is not None:
                found.append(finding)
        for finding in sorted(found, key=lambda f: f.kind in self._consequences):
            self.desk.report(finding)


def _logged_losses(logs):
    """The losses a step logs besides `loss` (names ending in "loss", as a
    custom `train_step`'s `d_loss` or `kl_loss`), by name; None if none."""
    found = {key: _scalar(value) for key, value in logs.items()
             if key != "loss" and key.lower().endswith("loss")}
    return {key: value for key, value in found.items() if value is not None} or None


def _scalar(value):
    """A logged value as a float, or None if it is not one number (a custom
    step may log anything)."""
    try:
        return float(value) if np.ndim(value) == 0 else None
    except (TypeError, ValueError):
        return None


def _number(value):
    return None if value is None else float(value)
