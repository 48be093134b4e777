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

import math

import numpy as np

from keras_gradwatch.core._detectors import base


class NonFiniteStep(base.Detector):
    """A non-finite loss or gradient norm, or skipped updates, at a step."""

    kind = "nonfinite"
    moment = "step"
    needs = ()

    def check(self, evidence):
        loss, norm, skips = evidence.loss, evidence.grad_norm, evidence.new_skips
        if evidence.norm_source != "step":
            return None
        if loss is not None and not math.isfinite(loss):
            signal, value, what = "loss", loss, "The loss is not finite"
        elif norm is not None and not math.isfinite(norm) and not evidence.loss_scaled:
            signal, value, what = "grad_norm", norm, "The gradient norm is not finite"
        elif skips and not evidence.loss_scaled:
            signal, value = "skipped_updates", float(skips)
            what = f"{skips} update(s) had non-finite gradients and were skipped"
        else:
            return None
        return base.Finding(
            "nonfinite", None, value, None, signal,
            f"{what} at step {evidence.step} (epoch {evidence.epoch}).",
            evidence={signal: value}, advice="nonfinite", diagnose=True,
        )


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
