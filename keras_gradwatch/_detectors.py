"""Private: the detectors behind GradWatch's `exploding` and `vanishing` alerts.

Each detector holds its thresholds and its history, takes plain numbers or
profiles in `check(...)`, and returns a `Finding` (what was seen, with the
message a person reads) or None. None of them touches a model: the callback
passes in the facts they need (the layer's type, a clipping suggestion).

- `Jump`: a value (the loss, or a gradient norm) far above its recent
  history (its highest values, not its median: healthy gradient norms are
  heavy-tailed); during the warm-up, when the history is short, only a
  jump by orders of magnitude counts.
- `StepJumps`: a step's loss and gradient norm, each against its own
  history, and the norm against an optional hard ceiling.
- `GrowthInTime`: a measured profile that grows going back in time, decided
  from evidence over the whole profile.
- `VanishingTail`: a profile whose far end receives almost nothing, at
  several measurements in a row, reported again only while the loss stalls.
"""

import dataclasses
import math
import warnings

import numpy as np

from keras_gradwatch import stats
from keras_gradwatch.alerts import RollingWindow

# A profile needs this many lags after lag 0 before growth in time is judged:
# with 3 or 4, one step near the loss decides the fitted rate.
MIN_GROWTH_LAGS = 8
# Growth in time is exploding when the far end is this many times the
# profile's lowest value (an order of magnitude), at a rate above the limit.
MIN_GROWTH = 10.0
# ... and the far quarter's median this many times the lowest median of an
# equally long run of lags before it: a rise that holds over many lags, not
# one step that stands out (at a layer's input, the step whose value the
# answer needs, e.g. a marker).
MIN_STEADY_GROWTH = 3.0
# The loss must fall by this share between reports of a vanishing gradient
# for the model to count as still learning.
LOSS_PROGRESS = 0.01


@dataclasses.dataclass(frozen=True)
class Finding:
    """What a detector saw: the fields of an `Alert` but the step."""

    kind: str
    layer: object
    value: float
    threshold: object
    signal: str
    message: str


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


class Jump:
    """A value far above its recent history: a loss jump or a norm spike.

    Args:
        factor: After the warm-up, a value above `factor` x the reference
            is a jump.
        warmup: Number of values the history needs for `factor` to apply.
            Before that (from the second value on) a value above
            `factor ** 2` x the largest one so far is a jump: an abrupt
            blow-up in the first steps is a jump by orders of magnitude.
        reference: `"p90"`, the 90th percentile of the history (of gradient
            norms: a healthy LSTM's norms swing 10-30x its median while it
            learns, never far above its own highs), `"median"`, or `"max"`
            (batch losses vary too much for a median once they are small).
        size: Number of recent values kept.
    """

    def __init__(self, factor, warmup, reference="p90", size=100):
        self.factor = factor
        self.warmup = warmup
        self.reference = reference
        self._history = RollingWindow(size)

    def check(self, value):
        """Adds a finite `value`; returns `(ratio, reference, warm)` or None.

        `ratio` is value / reference, `warm` whether the warm-up was over.
        """
        if value is None or not math.isfinite(value):
            return None
        found = None
        count = len(self._history)
        if count >= self.warmup:
            base = {
                "median": self._history.median,
                "max": self._history.max,
                "p90": lambda: self._history.quantile(0.9),
            }[self.reference]()
            if base > 0 and value > self.factor * base:
                found = (value / base, base, True)
        elif count:
            base = self._history.max()
            if base > 0 and value > self.factor**2 * base:
                found = (value / base, base, False)
        self._history.add(value)
        return found

    def __len__(self):
        return len(self._history)


def jump_message(what, value, step, jump, count, unit="steps"):
    """The sentence of a loss jump or a norm spike.

    Args:
        what: What jumped, e.g. `"loss"` or `"gradient norm"`.
        value: Its value.
        step: The training step.
        jump: The `(ratio, reference, warm)` returned by `Jump.check`.
        count: Values in the history it was compared with.
        unit: What the history counts (`"steps"` or `"measurements"`).
    """
    ratio, base, warm = jump
    if not warm:
        against = (
            f"{ratio:.3g}x the largest of the first {count} {unit} ({base:.3g}): "
            "a jump by orders of magnitude at the start of training"
        )
    elif what == "loss":
        against = f"{ratio:.0f}x the highest of the last {count} {unit} ({base:.3g})"
    else:
        against = (
            f"{ratio:.0f}x the 90th percentile of the last {count} {unit} ({base:.3g})"
        )
    return f"The {what} jumped to {value:.3g} at step {step}, {against}."


class StepJumps:
    """Every step's loss and gradient norm: a jump of either, or a norm
    above a hard ceiling, is one `exploding` finding for that step.

    Args:
        factor: See `Jump` (`spike_factor`).
        warmup: See `Jump`.
        max_grad_norm: Optional hard ceiling on the norm.
        unit: What the history counts, for the message.
    """

    def __init__(self, factor, warmup, max_grad_norm=None, unit="steps"):
        self.factor = factor
        self.max_grad_norm = max_grad_norm
        self.unit = unit
        self._losses = Jump(factor, warmup, reference="max")
        self._norms = Jump(factor, warmup, size=100 if unit == "steps" else 10)

    def check(self, step, loss, grad_norm, what="gradient norm"):
        """Adds this step's values (either may be None); returns a `Finding`
        whose message says what jumped and by how much, or None."""
        parts, signal, value, threshold = [], None, None, None
        if grad_norm is not None and math.isfinite(grad_norm):
            count = len(self._norms)
            jump = self._norms.check(grad_norm)
            if self.max_grad_norm is not None and grad_norm > self.max_grad_norm:
                parts.append(
                    f"The {what} is {grad_norm:.3g} at step {step}, above "
                    f"max_grad_norm={self.max_grad_norm:g}."
                )
                signal, value, threshold = "grad_norm", grad_norm, self.max_grad_norm
            elif jump:
                parts.append(jump_message(what, grad_norm, step, jump, count, self.unit))
                signal, value, threshold = "grad_norm", grad_norm, self._limit(jump)
        if loss is not None and math.isfinite(loss):
            count = len(self._losses)
            jump = self._losses.check(loss)
            if jump:
                parts.append(jump_message("loss", loss, step, jump, count, self.unit))
                if signal is None:
                    signal, value, threshold = "loss", loss, self._limit(jump)
        if not parts:
            return None
        return Finding("exploding", None, value, threshold, signal, " ".join(parts))

    def _limit(self, jump):
        _, base, warm = jump
        return base * (self.factor if warm else self.factor**2)


class GrowthInTime:
    """A time profile that grows going back in time (an exploding recurrence).

    The verdict needs evidence that holds over the profile, not one step:
    at least `MIN_GROWTH_LAGS` lags after lag 0; the far end at least
    `MIN_GROWTH` times the lowest value from lag 1 on (`stats.growth`); the
    median of the far quarter at least `MIN_STEADY_GROWTH` times the lowest
    median of a run of as many lags before it, so that one lag standing out
    is not growth; and a per-step rate above `max_decay_rate`, fitted from lag 1
    over the whole profile or over its far quarter. Lag 0 is left out
    throughout: it holds the direct path from the layer's output to the
    loss as well.

    Args:
        max_decay_rate: The per-step rate above which a profile grows.
    """

    def __init__(self, max_decay_rate):
        self.max_decay_rate = max_decay_rate

    def check(self, layer, profile, step, facts, clip_advice, site="state"):
        """Returns a `Finding` if the profile grows going back in time.

        Args:
            layer: The layer's name.
            profile: Its profile, indexed by lag.
            step: The training step of the measurement.
            facts: The layer's `LayerFacts`.
            clip_advice: The sentence that suggests clipping.
            site: Where the profile was measured.
        """
        profile = np.asarray(profile, dtype="float64")
        lags = profile[1:]
        if lags.size < MIN_GROWTH_LAGS:
            return None
        rate = stats.decay_rate(lags)
        quarter = max(4, math.ceil(lags.size / 4))
        tail = stats.decay_rate(lags[-quarter:])
        before = np.lib.stride_tricks.sliding_window_view(lags[:-quarter], quarter)
        with np.errstate(divide="ignore", invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN runs
            lowest = np.nanmin(np.nanmedian(before, axis=1)) if before.size else np.nan
            steady = float(np.nanmedian(lags[-quarter:]) / lowest)
        if not (math.isfinite(steady) and steady >= MIN_STEADY_GROWTH):
            return None
        fastest = max((r for r in (rate, tail) if math.isfinite(r)), default=float("nan"))
        growth = stats.growth(profile)
        if not (math.isfinite(fastest) and fastest > self.max_decay_rate):
            return None
        if not (math.isfinite(growth) and growth >= MIN_GROWTH):
            return None
        far = profile.size - 1
        message = (
            f"The gradient of layer '{layer}' grows going back in time "
            f"(measured at step {step}, {_site_words(site)}): over the {far} "
            f"steps of the profile it rises {growth:.3g}x from its lowest "
            f"value to the far end; fitted per step from lag 1: {rate:.3f}x"
            + (f", {tail:.3f}x over the far quarter" if math.isfinite(tail) else "")
            + f" (limit max_decay_rate={self.max_decay_rate:g}). The recurrence "
            "amplifies gradients: updates can blow up. "
            + clip_advice + " " + _growth_advice(facts)
        )
        return Finding("exploding", layer, fastest, self.max_decay_rate, "profile", message)


class VanishingTail:
    """A profile whose far end gets almost none of the gradient at the loss.

    Reported when it holds at `patience` measurements in a row (not counting
    step 0 or the early log-spaced steps: an untrained network often starts
    so and learns its way out) and the training loss has not fallen by
    `LOSS_PROGRESS` over them: a short memory is only a problem for a model
    that has stopped learning (a language model's gradient rightly fades
    within tens of characters while its loss falls). Once reported, it is
    reported again only while the training loss has not fallen by
    `LOSS_PROGRESS` since the last report: a model that keeps learning is
    not told again and again.

    Args:
        fraction: The far end's share of the gradient at lag 0 below which
            the profile vanishes.
        patience: Measurements in a row it must hold at.
    """

    def __init__(self, fraction, patience):
        self.fraction = fraction
        self.patience = patience
        self._streak = {}
        self._streak_losses = {}  # per layer, the loss levels of the streak
        self._reported_loss = {}  # per layer, the loss level at its last report

    def check(self, layer, record, step, far, loss_level, facts, backprop=None,
              counts=True):
        """Returns a `Finding` if the gradient vanishes (lastingly).

        Args:
            layer: The layer's name.
            record: Its `LayerProfile`.
            step: The training step of the measurement.
            far: The lag whose share of lag 0 is checked.
            loss_level: The mean training loss since the last measurement,
                or None.
            facts: The layer's `LayerFacts`.
            backprop: The `TruncatedBPTT` backprop span, or None.
            counts: Whether this measurement counts towards `patience`
                (the early, log-spaced ones do not: the network is still
                almost the untrained one).
        """
        profile = record.profile
        if step == 0 or not counts or not profile.size or not profile[0] > 0:
            return None
        far = min(far, profile.size - 1)
        share = float(profile[far] / profile[0])
        if not share < self.fraction:
            self._streak[layer] = 0
            self._streak_losses[layer] = []
            self._reported_loss.pop(layer, None)  # a new episode if it returns
            return None
        streak = self._streak.get(layer, 0) + 1
        self._streak[layer] = streak
        losses = self._streak_losses.setdefault(layer, [])
        losses.append(loss_level)
        del losses[: -self.patience]
        if streak < self.patience:
            return None
        previous = self._reported_loss.get(layer, _NEVER)
        # Before a first report: the loss `patience` measurements ago.
        reference = losses[0] if previous is _NEVER else previous
        learning = (
            reference is not None
            and loss_level is not None
            and loss_level < reference * (1 - LOSS_PROGRESS)
        )
        if learning:
            return None
        again = previous is not _NEVER
        self._reported_loss[layer] = loss_level
        message = (
            f"Layer '{layer}' ({_site_words(record.site)}, measured at step "
            f"{step}): {share:.2g} of the gradient at the loss reaches {far} "
            f"steps back, below vanishing_fraction={self.fraction:g} at {streak} "
            f"measurements in a row; it falls below 1 % within {record.horizon} "
            f"steps ({record.decay_rate:.3f}x per step). Inputs further back "
            "than that get little gradient signal through this layer (its state "
            "can still carry information further)."
        )
        if backprop is not None and math.isfinite(record.truncation_bias):
            message += (
                f" Truncating at backprop={backprop} cuts off "
                f"{record.truncation_bias:.1%} of this gradient."
            )
        if again:
            message += " The training loss has not fallen since the last report."
        message += " " + _vanishing_advice(facts)
        return Finding("vanishing", layer, share, self.fraction, "profile", message)


_NEVER = object()


def _site_words(site):
    return {
        "state": "state gradient ∂L/∂h_t",
        "input": "input gradient ∂L/∂x_t",
        "probe": "gradient at its Probe",
    }.get(site, str(site))


def _growth_advice(facts):
    if facts.gated:
        return "Lower the learning rate if clipping is not enough."
    return (
        "Also consider a smaller recurrent weight scale "
        "(recurrent_initializer='orthogonal'), a saturating activation (tanh "
        "rather than relu), or a gated layer (LSTM/GRU)."
    )


def _vanishing_advice(facts):
    if facts.type == "LSTM" and facts.unit_forget_bias:
        return (
            "If the task needs longer dependencies and the loss has stalled: "
            "this LSTM already starts with a forget-gate bias of 1 "
            "(unit_forget_bias=True); a larger one (e.g. chrono "
            "initialization, Tallec & Ollivier 2018), skip connections or "
            "attention shorten the path the gradient travels."
        )
    if facts.type == "LSTM":
        return (
            "This LSTM has unit_forget_bias=False: set it to True (a "
            "forget-gate bias of 1), so that its memory is kept by default."
        )
    if facts.type == "GRU":
        return (
            "If the task needs longer dependencies and the loss has stalled: "
            "skip connections or attention shorten the path the gradient "
            "travels, or try an LSTM with a large forget-gate bias."
        )
    if facts.type == "SimpleRNN":
        return (
            "A SimpleRNN rarely carries gradient far: use an LSTM or GRU "
            "(e.g. keras_gradwatch.layers.LSTM), or an orthogonal recurrent "
            "initializer."
        )
    return (
        "If the task needs longer dependencies and the loss has stalled: a "
        "gated layer (LSTM/GRU), skip connections or attention."
    )
