"""Private: a gradient that vanishes or explodes across depth.

Both detectors read a measurement's depth profile (`depth.DepthProfile`):
the gradient reaching each layer's output, ‖∂L/∂a_k‖, and each layer's
weight gradient relative to its weights, ‖∇w_k‖/‖w_k‖, in execution order.
They compare the first layer with the reference layer: the last layer
whose output is not a model output, i.e. the gradient that entered the
network's body. (The output layer's own gradient ∂L/∂ŷ is shaped by its
activation and the loss, e.g. 1/p for a cross-entropy on a probability p:
a confident wrong softmax would make every hidden layer look vanishing.)

A verdict needs both signals to agree, each beyond its threshold:

- the output gradient says how much of the gradient reaches the layer;
- the relative weight gradient says what that does to the layer's
  learning: under SGD a layer's weights move by lr x ‖∇w‖ per step, so a
  layer with 1e-6 of the reference's ‖∇w‖/‖w‖ learns a million times
  slower relative to its size. Either alone can mislead: an input scaled
  by 1000 inflates the first layer's weight gradient, a layer's output
  width its output gradient.

`DepthVanishing` (`vanishing`): both fractions of the first layer below
`vanishing_fraction` (default 1e-3, the same meaning as in time: the far
end gets less than a thousandth of the gradient at the near end), and:

- at `vanishing_patience` measurements in a row; every measurement
  counts, from the first: the collapse persisting from initialisation on
  is the evidence (unlike the time profile, whose early measurements
  describe a memory not yet learned, a depth collapse at initialisation
  is the architecture's, e.g. 0.25 at most per sigmoid layer);
- reported only after the first epoch and `vanishing.MIN_UPDATES`
  optimizer updates (the early-step rule of every vanishing verdict): an
  untrained network can grow out of a moderate collapse (its top layers'
  weights grow, a normalisation layer adapts), so a verdict waits for
  training to have had its chance;
- the loss has stalled (`trend`: the validation loss, else the
  epoch-mean training loss, not 1 % below its best earlier epoch). A
  collapse with a falling loss is a network learning with its upper
  layers, no fault to report.

It is thus reported at the first measurement after the early-step rule
where the loss has stalled, once per epoch verdict.

`DepthGrowth` (`exploding`): both ratios of the first layer at least
`MIN_DEPTH_GROWTH` (1000, three orders of magnitude) times the
reference's. That is a statement about the gradient now, not a wait for
the loss: with the first layers' relative steps a thousand times the last
hidden layer's, no learning rate suits both (one that moves the top by a
healthy 1e-3 of its weights per step rewrites the first layers), and the
network's output is chaotic in its first layers' weights. It is reported
at the first measurement that shows it, as the growth in time is.
"""

import math

from keras_gradwatch.core._detectors import base
from keras_gradwatch.core._detectors import vanishing

# The first layer's gradient at least this many times the reference's is an
# explosion across depth: three orders of magnitude, the mirror of the
# default vanishing_fraction (1e-3).
MIN_DEPTH_GROWTH = 1e3


def compare(profile):
    """`(output fraction, weight-ratio fraction, reference index)` of the
    first layer against the reference, or None when the profile cannot
    say (fewer than two layers before the output, or non-finite or zero
    values)."""
    reference = profile.reference
    if reference is None or reference < 1:
        return None
    output = profile.fractions()
    ratio = profile.fractions(profile.weight_ratio)
    first_output, first_ratio = float(output[0]), float(ratio[0])
    if not (math.isfinite(first_output) and math.isfinite(first_ratio)):
        return None
    return first_output, first_ratio, reference


def leading(values, beyond):
    """How many layers from the first have `beyond(value)` true in a row."""
    count = 0
    for value in values:
        if not (math.isfinite(value) and beyond(value)):
            break
        count += 1
    return count


def _layers_words(profile, count):
    names = profile.layers
    if count == 1:
        return f"the first layer '{names[0]}'"
    return f"the first {count} layers ('{names[0]}' to '{names[count - 1]}')"


def _per_layer(fraction, reference):
    """The mean factor per layer between the first layer and the reference."""
    return fraction ** (1.0 / reference) if fraction > 0 else 0.0


class DepthVanishing(base.Detector):
    """The first layers get a tiny fraction of the gradient, the loss stalls.

    Args:
        fraction: The first layer's share (of both signals, against the
            reference layer) below which the gradient vanishes in depth.
        patience: Measurements in a row it must hold at.

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch.depth import DepthProfile
    >>> from keras_gradwatch.core._detectors.trend import Trend
    >>> grads = 0.25 ** np.arange(19, -1, -1.0)
    >>> profile = DepthProfile(tuple(f"d{i}" for i in range(20)), grads, grads,
    ...                        np.ones(20), (False,) * 19 + (True,))
    >>> stalled = Trend(3, "loss", 0.6931, 0.6930, 2, True)
    >>> detector = DepthVanishing(patience=1)
    >>> seen = base.Evidence("measurement", 300, 3, updates=300, depth=profile,
    ...                      trend=stalled)
    >>> detector.check(seen).layer
    'd0'
    """

    kind = "vanishing"
    moment = "measurement"
    needs = ("depth",)

    def __init__(self, fraction=1e-3, patience=3):
        self.fraction = fraction
        self.patience = patience
        self._streak = 0
        self._reported = None  # the epoch of the trend last reported

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.vanishing_fraction, settings.vanishing_patience)

    def check(self, evidence):
        profile = evidence.depth
        compared = compare(profile)
        if compared is None:
            return None
        output, ratio, reference = compared
        if not (output < self.fraction and ratio < self.fraction):
            self._streak = 0
            self._reported = None  # a new episode if it returns
            return None
        self._streak += 1  # every measurement counts: see the module docstring
        if evidence.epoch < 1 or (evidence.updates or 0) < vanishing.MIN_UPDATES:
            return None
        trend = evidence.trend
        if self._streak < self.patience or trend is None or not trend.stalled:
            return None
        if self._reported == trend.epoch:
            return None
        self._reported = trend.epoch
        fractions = profile.fractions()
        count = leading(fractions[:reference], lambda v: v < self.fraction)
        names = profile.layers
        message = (
            f"The gradient vanishes across depth (measured at step {evidence.step}): "
            f"{_layers_words(profile, count)} of {len(names)} get less than "
            f"vanishing_fraction={self.fraction:g} of the gradient at '{names[reference]}', "
            f"the last layer before the output. The first gets {output:.2g} of it "
            f"(‖∂L/∂output‖ {profile.output_grad[0]:.3g} against "
            f"{profile.output_grad[reference]:.3g}, {_per_layer(output, reference):.3g}x "
            f"per layer over {reference} layers), and its weights' gradient relative to "
            f"the weights is {ratio:.2g} of that layer's. This held at {self._streak} "
            f"measurements in a row, the latest after {evidence.updates} updates, and "
            f"{trend.describe()}. The first layers hardly learn: the network trains "
            "with its last layers only."
        )
        return base.Finding(
            "vanishing", names[0], output, self.fraction, "depth", message,
            evidence={"fraction": output, "ratio_fraction": ratio, "layers": count,
                      "reference": names[reference], "streak": self._streak,
                      "trend": trend, "updates": evidence.updates},
            remedy=(
                "Use ReLU-family activations (relu, gelu, silu) with He initialisation "
                "(kernel_initializer='he_normal') instead of saturating ones (a sigmoid "
                "passes at most 0.25 of the gradient per layer), add normalisation "
                "layers (BatchNormalization, LayerNormalization), residual connections "
                "around blocks of layers, or use fewer layers."
            ),
        )


class DepthGrowth(base.Detector):
    """The gradient grows by orders of magnitude toward the input.

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch.depth import DepthProfile
    >>> grads = 2.0 ** np.arange(19, -1, -1.0)
    >>> profile = DepthProfile(tuple(f"d{i}" for i in range(20)), grads, grads,
    ...                        np.ones(20), (False,) * 19 + (True,))
    >>> finding = DepthGrowth().check(base.Evidence("measurement", 0, 0, depth=profile))
    >>> finding.kind, finding.layer, finding.value
    ('exploding', 'd0', 262144.0)
    """

    kind = "exploding"
    moment = "measurement"
    needs = ("depth",)

    def check(self, evidence):
        profile = evidence.depth
        compared = compare(profile)
        if compared is None:
            return None
        output, ratio, reference = compared
        if not (output >= MIN_DEPTH_GROWTH and ratio >= MIN_DEPTH_GROWTH):
            return None
        fractions = profile.fractions()
        count = leading(fractions[:reference], lambda v: v >= MIN_DEPTH_GROWTH)
        names = profile.layers
        message = (
            f"The gradient grows across depth (measured at step {evidence.step}): "
            f"{_layers_words(profile, count)} of {len(names)} get at least "
            f"{MIN_DEPTH_GROWTH:g}x the gradient at '{names[reference]}', the last layer "
            f"before the output. The first gets {output:.3g}x (‖∂L/∂output‖ "
            f"{profile.output_grad[0]:.3g} against {profile.output_grad[reference]:.3g}, "
            f"{_per_layer(output, reference):.3g}x per layer over {reference} layers), and "
            f"its weights' gradient relative to the weights is {ratio:.3g}x that layer's. "
            "No learning rate suits both ends: one that moves the last layers at a "
            "healthy pace rewrites the first."
        )
        return base.Finding(
            "exploding", names[0], output, MIN_DEPTH_GROWTH, "depth", message,
            evidence={"growth": output, "ratio_growth": ratio, "layers": count,
                      "reference": names[reference]},
            remedy=(
                "The initialisation is likely too large for this depth: use a "
                "variance-preserving initialiser (glorot_uniform for tanh or sigmoid, "
                "he_normal for ReLU), normalisation layers (BatchNormalization, "
                "LayerNormalization), or residual connections; or use fewer layers."
            ),
        )
