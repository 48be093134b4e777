"""Private: what `GradWatch` checks each step's logs and each measurement for.

`StepChecks` reads a training step's logs: it derives the step's own loss,
counts skipped updates, writes the step record, and reports loss and
gradient-norm jumps and non-finite values. `MeasurementChecks` reads a
measurement.

A measurement (`measurement.Measurement`) on the probe batch gives per-layer
gradient norms and time profiles. This module turns it into findings for
the alert desk: a probe gradient that overflowed or is not finite, a jump
of the probe batch's gradient norm (when the steps' logs have no
`grad_norm`), a profile that grows going back in time, and a vanishing
tail. The detectors keep their state (warm-up, streaks) across the
measurements of a run; the callback supplies what only it can see.
"""

import math

import numpy as np

from keras_gradwatch import _detectors
from keras_gradwatch import _model_facts
from keras_gradwatch import _train_step
from keras_gradwatch import _update_ratio


class StepChecks:
    """The checks of one `GradWatch`'s training steps.

    Args:
        desk: The callback's `_alerting.AlertDesk`.
        spike_factor: Jump factor of the loss and of `grad_norm`.
        warmup: Steps before jumps are judged at `spike_factor`.
        max_grad_norm: Absolute limit of `grad_norm`, or None.
    """

    def __init__(self, desk, *, spike_factor, warmup, max_grad_norm):
        self.desk = desk
        self.spike_factor = spike_factor
        self.warmup = warmup
        self.max_grad_norm = max_grad_norm
        self.norm_logged = False  # a step's logs held grad_norm
        self.skipped = None  # updates skipped so far, when known
        self._skipped_before = 0
        self._jumps = None
        self._step_loss = None
        self._model = None
        self._step_at_begin = 0
        self._iterations_at_begin = 0
        self._loss_sum = 0.0  # per-step losses since `loss_level` was read
        self._loss_count = 0
        self._high_ratios = {}  # per layer, measured steps in a row above HIGH

    def begin_fit(self, model, step):
        """A `fit` begins at `step`: its steps are compared with each other
        (a curriculum's next stage may train on other data), after a
        warm-up of their own."""
        self._model = model
        self._skipped_before = self.skipped or 0
        self.skipped = None
        self._step_at_begin = step
        self._iterations_at_begin = _model_facts.iterations(model)
        self._jumps = _detectors.StepJumps(self.spike_factor, self.warmup, self.max_grad_norm)
        self._step_loss = _train_step.StepLoss(model)

    def new_epoch(self):
        if self._step_loss is not None:
            self._step_loss.new_epoch()

    def check(self, logs, step, epoch, batch, add_step, nonfinite, update_ratios=None,
              clip=None, lr=None):
        """Records a step and reports what its logs show.

        Args:
            logs: The step's logs.
            step: The run's step count, this step included.
            epoch: The run's epoch.
            batch: The step's batch index in the epoch.
            add_step: Function that records the step's record (a dict).
            nonfinite: Function `(signal, value, what)` that reports a
                non-finite signal.
            update_ratios: This step's update-to-weight ratio by layer
                (`_update_ratio`), when taken.
            clip: With adaptive clipping, `(threshold, clipped updates so
                far)` after this step (threshold None while it is off).
            lr: The learning rate of the step's update, when known.
        """
        loss = _number(logs.get("loss"))
        instant = self._step_loss(loss, batch)
        grad_norm = _number(logs.get("grad_norm"))
        self.norm_logged = self.norm_logged or grad_norm is not None
        skipped = logs.get("skipped_updates")
        skipped = None if skipped is None else int(skipped)
        scaled = _model_facts.loss_scaled(self._model)
        if skipped is None and scaled:
            # A LossScaleOptimizer skips non-finite steps without counting
            # them: they are the steps its iterations did not advance.
            applied = _model_facts.iterations(self._model) - self._iterations_at_begin
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
                **({"clip": clip[0], "clipped_updates": clip[1]} if clip else {}),
                **({"lr": lr} if lr is not None else {}),
            }
        )
        new_skips = 0
        if skipped is not None:
            new_skips = 0 if self.skipped is None else skipped - self.skipped
            self.skipped = skipped
        if _finite(grad_norm):
            self.desk.step_norms.add(grad_norm)
        # Jumps first: a blow-up is reported at the step where the loss or the
        # norm leaps, before the step where it turns NaN.
        found = self._jumps.check(step, instant, grad_norm)
        if found:
            self.desk.report(
                found,
                " A sign of an exploding gradient (or of a bad batch). " + self.desk.clip_advice(),
            )
        if update_ratios:
            self._check_ratios(update_ratios, step)
        if loss is not None and not math.isfinite(loss):
            nonfinite("loss", loss, "The loss is not finite")
        elif grad_norm is not None and not math.isfinite(grad_norm) and not scaled:
            nonfinite("grad_norm", grad_norm, "The gradient norm is not finite")
        elif new_skips > 0 and not scaled:
            nonfinite(
                "skipped_updates",
                float(new_skips),
                f"{new_skips} update(s) had non-finite gradients and were skipped",
            )
        if _finite(instant):
            self._loss_sum += instant
            self._loss_count += 1

    def _check_ratios(self, ratios, step):
        """An `exploding` alert when steps rewrite a layer: one update as
        large as the layer's weights (`_update_ratio.WRECK`), or above
        `_update_ratio.HIGH` (100x the healthy 1e-3) at `_update_ratio.
        PATIENCE` measured steps in a row. (A small layer can move by more
        than a tenth in one healthy early step, a head of a few weights
        above all.)"""
        for name, ratio in ratios.items():
            if not math.isfinite(ratio):
                continue  # the non-finite checks report it
            streak = self._high_ratios.get(name, 0) + 1 if ratio > _update_ratio.HIGH else 0
            self._high_ratios[name] = streak
            if ratio < _update_ratio.WRECK and streak < _update_ratio.PATIENCE:
                continue
            why = (
                "the update is as large as the layer" if ratio >= _update_ratio.WRECK
                else f"above {_update_ratio.HIGH:g} at {streak} measured steps in a row"
            )
            self.desk.alert(
                "exploding", name, ratio, _update_ratio.HIGH, "update_ratio",
                f"The update of step {step} changed layer '{name}' by {ratio:.3g} of "
                f"its weights (‖Δw‖/‖w‖; about {_update_ratio.HEALTHY:g} is healthy, "
                f"CS231n): {why}, so the steps rewrite the layer, the earliest sign "
                "of a blow-up. " + self.desk.clip_advice(),
            )

    def loss_level(self):
        """The mean step loss since the previous call (None if none)."""
        level = self._loss_sum / self._loss_count if self._loss_count else None
        self._loss_sum, self._loss_count = 0.0, 0
        return level


class MeasurementChecks:
    """The checks of one `GradWatch`'s measurements, with their detectors.

    Args:
        desk: The callback's `_alerting.AlertDesk`.
        spike_factor: Jump factor of the probe batch's gradient norm.
        warmup: Measurements before jumps are judged at `spike_factor`.
        max_grad_norm: Absolute limit of the probe batch's gradient norm.
        max_decay_rate: Per-step rate above which a profile grows in time.
        vanishing_fraction: Share of the gradient at lag 0 below which the
            far end of a profile vanishes.
        vanishing_patience: Measurements in a row a vanishing tail must hold.
    """

    def __init__(self, desk, *, spike_factor, warmup, max_grad_norm, max_decay_rate,
                 vanishing_fraction, vanishing_patience):
        self.desk = desk
        self.probe_jumps = _detectors.StepJumps(
            spike_factor, warmup, max_grad_norm, unit="measurements"
        )
        self.growth = _detectors.GrowthInTime(max_decay_rate)
        self.vanishing = _detectors.VanishingTail(vanishing_fraction, vanishing_patience)

    def check(self, result, step, loss_level, *, counts, backprop, facts,
              step_norms_logged, overflowed, nonfinite):
        """Reports what a measurement shows to the desk.

        Args:
            result: The `measurement.Measurement`.
            step: The training step it was taken at.
            loss_level: The mean training loss since the previous one, or None.
            counts: Whether it counts towards the vanishing patience (not
                the untrained network's early measurements).
            backprop: `TruncatedBPTT`'s backprop span, or None.
            facts: The `LayerFacts` of the model's recurrent layers, by name.
            step_norms_logged: Whether the steps' logs hold `grad_norm`
                (then the probe batch's norm is not checked for jumps).
            overflowed: Function returning whether weights and probe data
                are finite, so that a non-finite gradient overflowed.
            nonfinite: Function `(signal, value, what, layer=None)` that
                reports a non-finite signal.
        """
        layer_norms = result.layer_norms or {}
        broken = [name for name, v in layer_norms.items() if not math.isfinite(v)]
        if broken:
            if overflowed():
                # Finite weights and data, non-finite gradient: it
                # overflowed. The cause is an exploding gradient: say so
                # before the NaN.
                self.desk.alert(
                    "exploding", broken[0], float("inf"), None, "layer_norm",
                    f"The gradient of layer '{broken[0]}' on the probe batch "
                    f"overflowed (not finite) at step {step} while every "
                    "weight is finite: the gradient explodes. "
                    + self.desk.clip_advice(),
                )
            nonfinite(
                "layer_norm", layer_norms[broken[0]],
                "The gradient on the probe batch is not finite", layer=broken[0],
            )
            return
        if result.global_norm is not None and math.isfinite(result.global_norm):
            self.desk.measured_norms.add(result.global_norm)
            # Without every step's norm, the probe batch's is the signal. (A
            # layer's share of the gradient shifts a lot early in training:
            # per-layer norms are recorded and drawn, not alerted on.)
            if not step_norms_logged:
                found = self.probe_jumps.check(
                    step, None, result.global_norm,
                    what="gradient norm on the probe batch",
                )
                if found:
                    self.desk.report(found, " " + self.desk.clip_advice())
        for name, record in result.layers.items():
            self._check_profile(name, record, step, loss_level, counts, backprop,
                                facts, nonfinite)

    def _check_profile(self, name, record, step, loss_level, counts, backprop, facts,
                       nonfinite):
        profile = record.profile
        if not np.isfinite(profile).all():
            nonfinite("profile", float("nan"), "The measured gradient is not finite", layer=name)
            return
        layer_facts = facts.get(name.split("#")[0], _detectors.LayerFacts())
        if self.desk.active("exploding"):
            found = self.growth.check(
                name, profile, step, layer_facts, self.desk.clip_advice(), record.site
            )
            if found:
                self.desk.report(found)
        if self.desk.active("vanishing"):
            far = len(profile) - 1 if backprop is None else backprop - 1
            found = self.vanishing.check(
                name, record, step, far, loss_level, layer_facts, backprop, counts=counts,
            )
            if found:
                self.desk.report(found)


def _number(value):
    return None if value is None else float(value)


def _finite(value):
    return value is not None and math.isfinite(value)
