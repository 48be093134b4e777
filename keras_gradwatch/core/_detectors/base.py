"""Private: what every detector shares: the evidence in, the finding out.

A detector is a small stateful object (see `Detector`): it declares its
`kind` (a name in `kinds.KINDS`), the `moment` it checks (a training
step, a measurement, each measured layer of a measurement, or an epoch
end) and the `needs`, the `Evidence` fields that must be present for its
verdict; `check(evidence)` returns a `Finding` or None. It never touches a
model: `GradWatch` gathers the evidence (numbers and arrays), the checks
(`_checks`) hand it to each detector, and the alert desk (`_alerting`)
turns a finding into an `Alert`, adding the advice.
"""

import collections
import dataclasses
import math
import statistics

# The moments a detector can check.
MOMENTS = ("step", "measurement", "layer")


@dataclasses.dataclass(frozen=True)
class LayerFacts:
    """What the advice of a message needs to know about a measured layer.

    Attributes:
        type: `"LSTM"`, `"GRU"`, `"SimpleRNN"`, or `""` when unknown (a
            `Probe`, a custom cell).
        unit_forget_bias: For an LSTM, its `unit_forget_bias`.
    """

    type: str = ""
    unit_forget_bias: bool = True

    @property
    def gated(self):
        return self.type in ("LSTM", "GRU")


@dataclasses.dataclass(frozen=True)
class Evidence:
    """What one check may read. A field the moment does not have is None.

    Attributes:
        moment: `"step"`, `"measurement"` or `"layer"`.
        step: The run's training step (0: before the first update).
        epoch: The run's epoch, from 0.
        updates: Optimizer updates applied so far in the run (its
            `iterations`), when known.
        loss: A step's own loss (not the epoch's running mean).
        logged_losses: The other losses a step logs (names ending in
            "loss", e.g. a GAN's `d_loss`), by name.
        grad_norm: A step's global gradient norm, or the probe batch's
            when the steps log none (`norm_source="probe"`).
        norm_source: `"step"` or `"probe"`.
        new_skips: Updates skipped at this step for non-finite gradients.
        loss_scaled: The optimizer scales the loss (it skips non-finite
            updates by itself).
        lr: The learning rate of the step's update, when known.
        update_ratios: ‖Δw‖/‖w‖ by layer over the step's updates.
        step_updates: Optimizer updates the ratios span (a `TruncatedBPTT`
            step holds one per window).
        layer_norms: A measurement's gradient norm by top-level layer.
        inputs_finite: Whether the weights and the probe batch are finite
            (gathered only when a layer norm is not).
        layer: The measured layer's name.
        profile: Its `measurement.LayerProfile` (site, profile, statistics).
        facts: Its `LayerFacts`.
        backprop: `TruncatedBPTT`'s backprop span, or None.
        trend: The latest `trend.Trend` of the loss, or None before two
            epochs ended.
        depth: A measurement's `depth.DepthProfile` (the gradient reaching
            each layer, in execution order), when measured.
    """

    moment: str
    step: int
    epoch: int
    updates: object = None
    loss: object = None
    logged_losses: object = None
    grad_norm: object = None
    norm_source: str = "step"
    new_skips: object = None
    loss_scaled: bool = False
    lr: object = None
    update_ratios: object = None
    step_updates: object = None
    layer_norms: object = None
    inputs_finite: object = None
    layer: object = None
    profile: object = None
    facts: object = None
    backprop: object = None
    trend: object = None
    depth: object = None


@dataclasses.dataclass(frozen=True)
class Finding:
    """What a detector saw: the fields of an `Alert` but the step.

    Attributes:
        kind: A name in `kinds.KINDS`.
        layer: The layer concerned, or None.
        value: The value the verdict rests on.
        threshold: The threshold it crossed, or None.
        signal: What was checked (`"loss"`, `"grad_norm"`, `"profile"`...).
        message: What was measured, with the numbers of the verdict.
        evidence: Those numbers by name (for tests and records).
        advice: Which advice the alert desk adds: `"clip"` (clip the
            gradients), `"lr_or_clip"` (lower the learning rate, or clip),
            `"nonfinite"` (lower the learning rate, clip, check the data),
            `"data_first"` (check the data and the loss, then as
            `"nonfinite"`), or `""` (none).
        remedy: The detector's own sentence of advice (about the layer or
            the set-up), after the desk's.
        diagnose: The desk should name the first layer affected (a step
            signal that names none).
    """

    kind: str
    layer: object
    value: float
    threshold: object
    signal: str
    message: str
    evidence: dict = dataclasses.field(default_factory=dict)
    advice: str = ""
    remedy: str = ""
    diagnose: bool = False


class Detector:
    """The interface of a detector (subclasses set the class attributes).

    Attributes:
        kind: The kind of its findings, a name in `kinds.KINDS`.
        moment: When it checks: `"step"`, `"measurement"` or `"layer"`.
        needs: The `Evidence` fields its verdict needs; the checks call it
            only when all of them are present.
    """

    kind = ""
    moment = "step"
    needs = ()

    @classmethod
    def from_settings(cls, settings):
        """A detector from `GradWatch`'s settings (a `Settings`)."""
        return cls()

    def begin_fit(self):
        """A `fit` begins (histories that belong to one `fit` restart)."""

    def check(self, evidence):
        """Returns a `Finding`, or None."""
        raise NotImplementedError


@dataclasses.dataclass(frozen=True)
class Settings:
    """`GradWatch`'s settings that detectors read (see its arguments)."""

    spike_factor: float = 10.0
    warmup: int = 5
    max_grad_norm: object = None
    max_decay_rate: float = 1.05
    vanishing_fraction: float = 1e-3
    vanishing_patience: int = 3
    tolerance: float = 0.05


class RollingWindow:
    """The last `size` finite values added, with their median and maximum.

    Args:
        size: Number of values kept.

    Example:

    >>> window = RollingWindow(3)
    >>> for value in (1.0, 5.0, 2.0, 3.0):
    ...     window.add(value)
    >>> window.median(), window.max(), window.quantile(0.5)
    (3.0, 5.0, 3.0)
    """

    def __init__(self, size=100):
        self._values = collections.deque(maxlen=size)

    def add(self, value):
        if value is not None and math.isfinite(value):
            self._values.append(float(value))

    def __len__(self):
        return len(self._values)

    def values(self):
        return list(self._values)

    def median(self):
        return statistics.median(self._values) if self._values else float("nan")

    def quantile(self, q):
        """The `q` quantile (0..1) of the values, linearly interpolated."""
        if not self._values:
            return float("nan")
        ordered = sorted(self._values)
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    def max(self):
        return max(self._values) if self._values else float("nan")


def site_words(site):
    """How messages name a measurement site."""
    return {
        "state": "state gradient ∂L/∂h_t",
        "input": "input gradient ∂L/∂x_t",
        "probe": "gradient at its Probe",
    }.get(site, str(site))


def finite(value):
    return value is not None and math.isfinite(value)
