"""Private: a gradient that grows going back in time (an amplifying recurrence).

`GrowthInTime` judges a measured profile (lag 0 = the step nearest the
loss). What the profile can prove depends on where it was measured:

- the state gradient ∂L/∂h_t (site `"state"`, the package's layers) is the
  recurrence itself: a rise over many lags is the recurrence amplifying;
- the input gradient ∂L/∂x_t (site `"input"`, stock Keras layers) and the
  gradient at a `Probe` (site `"probe"`) are the state gradient seen through
  the input's own weights and gates, step by step: they are small where the
  input carries nothing (padding, which the model learns to ignore) and
  large where the information sits. A rise going back in time there says
  where the model reads its answer as much as how the recurrence treats
  the gradient: an encoder LSTM on sentences padded at the end rises 17.6x
  from the padding into the sentence; an LSTM classifier whose cue sits in
  the first steps rises 15-90x going back, smoothly and geometrically,
  during its 0.693 plateau and while it leaves it. No test on the profile
  alone tells the two apart, so these sites give no `exploding` verdict:
  their profiles are recorded and drawn, and a stock layer's blow-up is
  reported by the step signals (`spikes`, `update_ratio`, the overflow of
  `nonfinite`). Use the package's layers (`keras_gradwatch.layers`) for a
  verdict on the recurrence.

In every case the verdict needs evidence over the profile, not one step:
at least `MIN_GROWTH_LAGS` lags after lag 0; the far end at least
`MIN_GROWTH` times the lowest value; the median of the far quarter at least
`MIN_STEADY_GROWTH` times the lowest median of as many lags before it; and
a per-step rate above `max_decay_rate`, fitted from lag 1 over the whole
profile or over its far quarter. Lag 0 is left out throughout: it holds the
direct path from the layer's output to the loss as well.
"""

import math
import warnings

import numpy as np

from keras_gradwatch.core import stats
from keras_gradwatch.core._detectors import base

# A profile needs this many judged lags after lag 0: with 3 or 4, one step
# near the loss decides the fitted rate.
MIN_GROWTH_LAGS = 8
# The far end at least this many times the lowest value (an order of
# magnitude), at a rate above the limit.
MIN_GROWTH = 10.0
# The far quarter's median this many times the lowest median of an equally
# long run of lags before it: a rise that holds over many lags.
MIN_STEADY_GROWTH = 3.0


class GrowthInTime(base.Detector):
    """A time profile that grows going back in time.

    Args:
        max_decay_rate: The per-step rate above which a profile grows.

    Example:

    >>> import types
    >>> rising = 1e-3 * 1.25 ** np.arange(27)
    >>> def seen(site):
    ...     profile = types.SimpleNamespace(site=site, profile=rising)
    ...     return base.Evidence("layer", 500, 2, layer="rnn", profile=profile)
    >>> GrowthInTime().check(seen("state")).evidence["growth"] > 100
    True
    >>> GrowthInTime().check(seen("input")) is None  # where the information sits?
    True
    """

    kind = "exploding"
    moment = "layer"
    needs = ("profile",)  # measured at the state (see the module's docstring)

    def __init__(self, max_decay_rate=1.05):
        self.max_decay_rate = max_decay_rate

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.max_decay_rate)

    def check(self, evidence):
        record = evidence.profile
        if record.site != "state":
            return None  # the input's own content can make the same rise
        profile = np.asarray(record.profile, dtype="float64")
        if not np.isfinite(profile).all():
            return None
        lags = profile[1:]
        if lags.size < MIN_GROWTH_LAGS:
            return None
        verdict = self._verdict(lags)
        if verdict is None:
            return None
        rate, tail, rise = verdict
        message = (
            f"The gradient of layer '{evidence.layer}' grows going back in time "
            f"(measured at step {evidence.step}, {base.site_words(record.site)}): "
            f"over the {lags.size} steps of the profile it rises {rise:.3g}x from its "
            f"lowest value to the far end; fitted per step: {rate:.3f}x"
            + (f", {tail:.3f}x over the far quarter" if math.isfinite(tail) else "")
            + f" (limit max_decay_rate={self.max_decay_rate:g})"
            + ". The recurrence amplifies gradients: updates can blow up."
        )
        fastest = max(r for r in (rate, tail) if math.isfinite(r))
        return base.Finding(
            "exploding", evidence.layer, fastest, self.max_decay_rate, "profile", message,
            evidence={"rate": rate, "tail_rate": tail, "growth": rise,
                      "lags": (1, lags.size), "site": record.site},
            advice="clip", remedy=_growth_advice(evidence.facts or base.LayerFacts()),
        )

    def _verdict(self, lags):
        """`(rate, tail rate, growth)` if `lags` (from lag 1 on) grow, else None."""
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
        if not (math.isfinite(fastest) and fastest > self.max_decay_rate):
            return None
        rise = stats.growth(np.concatenate([[np.nan], lags]))
        if not (math.isfinite(rise) and rise >= MIN_GROWTH):
            return None
        return rate, tail, rise


def _growth_advice(facts):
    if facts.gated:
        return ""  # the optimizer's advice (learning rate or clipping) says it
    return (
        "Also consider a smaller recurrent weight scale "
        "(recurrent_initializer='orthogonal'), a saturating activation (tanh "
        "rather than relu), or a gated layer (LSTM/GRU)."
    )
