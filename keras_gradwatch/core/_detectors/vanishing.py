"""Private: a profile whose far end gets almost none of the gradient.

A short reach is a measurement, not a fault: a language model's gradient
rightly fades within tens of characters while its loss falls. It is a
`vanishing` verdict only when all of these hold:

- the far end of the profile (its last lag, or on `TruncatedBPTT` the
  last lag within `backprop`) holds less than `vanishing_fraction` of the
  gradient at lag 0, at `vanishing_patience` measurements in a row;
- those measurements were taken after the first epoch and after
  `MIN_UPDATES` optimizer updates, whatever scheduled them: an untrained
  network's gradient fades fast and it learns its way out (the count is
  of updates, not steps: a `TruncatedBPTT` step holds one per window);
- the loss has stalled (`trend`: the validation loss, else the epoch-mean
  training loss, not `LOSS_PROGRESS` below its best earlier epoch);
- on an input gradient ∂L/∂x_t or a `Probe` (stock layers), the profile is
  shaped by decay, not by the input's content: the median of the far
  end's last `RISE_LAGS` lags is less than `CONTENT_RISE` times the lowest
  median of as many lags nearer the loss. Those sites see
  the state gradient through the input's own weights and gates, which are
  small where the input carries nothing (padding the model learned to
  ignore) and large where the information sits: an LSTM classifier on
  reviews padded at the end gets 2e-5 of lag 0 over the padding and 17x
  that at the review's first words, 59 steps back, where it reads its
  answer. A profile that rises again going back cannot show that the
  recurrence lets the gradient fade (the state gradient, site `"state"`,
  can: use the package's layers for that verdict).

It is reported once per epoch verdict: again only after a later epoch end
finds the loss still stalled.
"""

import math

import numpy as np

from keras_gradwatch.core._detectors import base

# No vanishing verdict before this many optimizer updates (and not in the
# first epoch): the untrained network's memory is not yet learned (as
# `TruncatedBPTT(window="auto")` waits before shrinking its window).
MIN_UPDATES = 200
# An input-site profile whose far end is this many times its lowest value
# nearer the loss is shaped by where the information sits (the same factor
# `growth.MIN_STEADY_GROWTH` asks of a rise that holds).
CONTENT_RISE = 3.0
# ... over this many lags at the far end (a rise of one lag can be noise).
RISE_LAGS = 3


class VanishingTail(base.Detector):
    """A profile whose far end vanishes while the loss stalls.

    Args:
        fraction: The far end's share of the gradient at lag 0 below which
            the profile vanishes.
        patience: Measurements in a row it must hold at.
    """

    kind = "vanishing"
    moment = "layer"
    needs = ("profile",)

    def __init__(self, fraction=1e-3, patience=3):
        self.fraction = fraction
        self.patience = patience
        self._streak = {}
        self._reported = {}  # per layer, the epoch of the trend last reported

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.vanishing_fraction, settings.vanishing_patience)

    def check(self, evidence):
        layer, record = evidence.layer, evidence.profile
        profile = np.asarray(record.profile, dtype="float64")
        if not profile.size or not np.isfinite(profile).all() or not profile[0] > 0:
            return None
        backprop = evidence.backprop
        far = profile.size - 1 if backprop is None else min(backprop - 1, profile.size - 1)
        share = float(profile[far] / profile[0])
        if not share < self.fraction or _shaped_by_content(record.site, profile[: far + 1]):
            self._streak[layer] = 0
            self._reported.pop(layer, None)  # a new episode if it returns
            return None
        if evidence.epoch < 1 or (evidence.updates or 0) < MIN_UPDATES:
            return None  # too early to count, whatever scheduled it
        streak = self._streak.get(layer, 0) + 1
        self._streak[layer] = streak
        trend = evidence.trend
        if streak < self.patience or trend is None or not trend.stalled:
            return None
        if self._reported.get(layer) == trend.epoch:
            return None
        self._reported[layer] = trend.epoch
        message = (
            f"Layer '{layer}' ({base.site_words(record.site)}, measured at step "
            f"{evidence.step}): {share:.2g} of the gradient at the loss reaches {far} "
            f"steps back, below vanishing_fraction={self.fraction:g} at {streak} "
            f"measurements in a row; it falls below 1 % within {record.horizon} "
            f"steps ({record.decay_rate:.3f}x per step); and {trend.describe()}. "
            "Inputs further back than that get little gradient signal through this "
            "layer (its state can still carry information further)."
        )
        if backprop is not None and math.isfinite(record.truncation_bias):
            message += (
                f" Truncating at backprop={backprop} cuts off "
                f"{record.truncation_bias:.1%} of this gradient."
            )
        return base.Finding(
            "vanishing", layer, share, self.fraction, "profile", message,
            evidence={"share": share, "far": far, "streak": streak,
                      "trend": trend, "updates": evidence.updates},
            remedy=_vanishing_advice(evidence.facts or base.LayerFacts()),
        )


def _shaped_by_content(site, profile):
    """Whether an input-site `profile` rises again toward its far end: the
    median of its last `RISE_LAGS` lags at least `CONTENT_RISE` times the
    lowest median of as many lags nearer the loss (from lag 1): a rise that
    holds over a few lags, not one noisy value over a decayed floor."""
    if site == "state" or profile.size < 2 * RISE_LAGS + 1:
        return False
    runs = np.lib.stride_tricks.sliding_window_view(profile[1:-RISE_LAGS], RISE_LAGS)
    lowest = float(np.min(np.median(runs, axis=1)))
    return lowest > 0 and float(np.median(profile[-RISE_LAGS:])) >= CONTENT_RISE * lowest


def _vanishing_advice(facts):
    if facts.type == "LSTM" and facts.unit_forget_bias:
        return (
            "If the task needs longer dependencies: this LSTM already starts with "
            "a forget-gate bias of 1 (unit_forget_bias=True); a larger one (e.g. "
            "chrono initialization, Tallec & Ollivier 2018), skip connections or "
            "attention shorten the path the gradient travels."
        )
    if facts.type == "LSTM":
        return (
            "This LSTM has unit_forget_bias=False: set it to True (a "
            "forget-gate bias of 1), so that its memory is kept by default."
        )
    if facts.type == "GRU":
        return (
            "If the task needs longer dependencies: skip connections or attention "
            "shorten the path the gradient travels, or try an LSTM with a large "
            "forget-gate bias."
        )
    if facts.type == "SimpleRNN":
        return (
            "A SimpleRNN rarely carries gradient far: use an LSTM or GRU "
            "(e.g. keras_gradwatch.layers.LSTM), or an orthogonal recurrent "
            "initializer."
        )
    return (
        "If the task needs longer dependencies: a gated layer (LSTM/GRU), skip "
        "connections or attention."
    )
