"""Private: non-finite values, and the gradient overflow they may reveal.

- `NonFiniteStep`: a step's loss or gradient norm is NaN or Inf, or the
  optimizer skipped updates for non-finite gradients (a loss-scale
  optimizer does this on purpose and is left alone). The step names no
  layer: the alert desk asks for the first layer affected.
- `NonFiniteProbe`: a measurement's gradient of some layer on the probe
  batch is not finite.
- `ProbeOverflow` (`exploding`): that gradient is not finite while every
  weight and the probe batch are: it overflowed, the cause is an exploding
  gradient, reported before the non-finite alert of the same measurement.
- `NonFiniteProfile`: a measured time profile holds NaN or Inf while the
  layer norms are finite.
"""

import collections
import math

import numpy as np

from keras_gradwatch.core._detectors import base


class NonFiniteStep(base.Detector):
    """A non-finite loss (the compiled one, or any other the step logs,
    e.g. a GAN's `d_loss`) or gradient norm, or skipped updates, at a step.

    Too large a step shows before the NaN: the gradient norm or the loss
    grows. A non-finite value that comes at once (the step before it was
    at most `factor` times its recent median, or the weights were still the
    initial ones) points at the data or the loss function first, and the
    finding says so (`advice="data_first"`).

    Args:
        factor: `spike_factor`: a last finite value above this many times
            the median of the recent ones grew before the NaN.
    """

    kind = "nonfinite"
    moment = "step"
    needs = ()

    def __init__(self, factor=10.0):
        self.factor = factor
        # The recent finite values of the gradient norm and of each loss.
        self._recent = collections.defaultdict(base.RollingWindow)

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.spike_factor)

    def check(self, evidence):
        if evidence.norm_source != "step":
            return None
        found = self._signal(evidence)
        if found is None:
            values = {"gradient norm": evidence.grad_norm, "loss": evidence.loss}
            values.update(evidence.logged_losses or {})
            for name, value in values.items():
                if value is not None:
                    self._recent[name].add(value)
            return None
        signal, value, what = found
        message = f"{what} at step {evidence.step} (epoch {evidence.epoch})."
        at_once = self._at_once(evidence.step, evidence.updates)
        if at_once:
            message += f" Nothing grew before it: {at_once}."
        return base.Finding(
            "nonfinite", None, value, None, signal, message,
            evidence={signal: value}, advice="data_first" if at_once else "nonfinite",
            diagnose=True,
        )

    @staticmethod
    def _signal(evidence):
        """`(signal, value, sentence)` of the step's non-finite value, or None."""
        loss, norm, skips = evidence.loss, evidence.grad_norm, evidence.new_skips
        if loss is not None and not math.isfinite(loss):
            return "loss", loss, "The loss is not finite"
        broken = {k: v for k, v in (evidence.logged_losses or {}).items() if not math.isfinite(v)}
        if broken:
            names = ", ".join(f"'{name}'" for name in broken)
            verb = "is" if len(broken) == 1 else "are"
            return ("logged_loss", next(iter(broken.values())),
                    f"The logged {names} {verb} not finite")
        if norm is not None and not math.isfinite(norm) and not evidence.loss_scaled:
            return "grad_norm", norm, "The gradient norm is not finite"
        if skips and not evidence.loss_scaled:
            return ("skipped_updates", float(skips),
                    f"{skips} update(s) had non-finite gradients and were skipped")
        return None

    def _at_once(self, step, updates):
        """Why the non-finite value came at once (a phrase), or None when
        the gradient norm or a loss grew before it, or nothing is known."""
        if step <= 1 and updates is not None and updates <= 1:
            return "it came from the initial weights, before any update could cause it"
        steady = []
        for name, window in self._recent.items():
            if not len(window):
                continue
            last, median = window.values()[-1], window.median()
            if last > self.factor * median:
                return None
            steady.append(f"the {name} was {last:.3g} the step before (median {median:.3g})")
        return "; ".join(steady) or None


def _broken(layer_norms):
    return [name for name, value in layer_norms.items() if not math.isfinite(value)]


class NonFiniteProbe(base.Detector):
    """A layer's gradient on the probe batch is not finite."""

    kind = "nonfinite"
    moment = "measurement"
    needs = ("layer_norms",)

    def check(self, evidence):
        broken = _broken(evidence.layer_norms)
        if not broken:
            return None
        return base.Finding(
            "nonfinite", broken[0], evidence.layer_norms[broken[0]], None, "layer_norm",
            f"The gradient on the probe batch is not finite at step {evidence.step} "
            f"(epoch {evidence.epoch}). First layer affected: '{broken[0]}'.",
            evidence={"layers": broken}, advice="nonfinite",
        )


class ProbeOverflow(base.Detector):
    """A non-finite probe gradient while weights and data are finite."""

    kind = "exploding"
    moment = "measurement"
    needs = ("layer_norms", "inputs_finite")

    def check(self, evidence):
        broken = _broken(evidence.layer_norms)
        if not broken or not evidence.inputs_finite:
            return None
        return base.Finding(
            "exploding", broken[0], float("inf"), None, "layer_norm",
            f"The gradient of layer '{broken[0]}' on the probe batch overflowed (not "
            f"finite) at step {evidence.step} while every weight and the probe batch "
            "are finite: the gradient explodes.",
            evidence={"layers": broken}, advice="clip_then_lr",
        )


class NonFiniteProfile(base.Detector):
    """A measured time profile that holds NaN or Inf."""

    kind = "nonfinite"
    moment = "layer"
    needs = ("profile",)

    def check(self, evidence):
        if evidence.layer_norms and _broken(evidence.layer_norms):
            return None  # the probe's non-finite gradient is reported already
        if np.isfinite(evidence.profile.profile).all():
            return None
        return base.Finding(
            "nonfinite", evidence.layer, float("nan"), None, "profile",
            f"The measured gradient is not finite at step {evidence.step} (epoch "
            f"{evidence.epoch}). First layer affected: '{evidence.layer}'.",
            advice="nonfinite",
        )
