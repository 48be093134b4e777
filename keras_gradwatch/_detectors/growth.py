"""Private: a gradient that grows going back in time (an amplifying recurrence).

`GrowthInTime` judges a measured profile (lag 0 = the step nearest the
loss). What the profile can prove depends on where it was measured:

- the state gradient ∂L/∂h_t (site `"state"`, the package's layers) is the
  recurrence itself: a rise over many lags is the recurrence amplifying;
- the input gradient ∂L/∂x_t (site `"input"`, stock Keras layers) and the
  gradient at a `Probe` (site `"probe"`) also follow the input: it is small
  where the input is padding (the model learns to ignore it) and large
  where the information sits. Their rise counts only where input content
  cannot explain it: over lags where every probe sequence holds content
  (not the run of padding at its start or end, see `content_share`); only
  when the rise holds across the whole rising span, third by third, as an
  amplifying recurrence's does (the step from padding into a sentence, or
  one position of information, makes a rise in one place only); and only
  while the loss has stalled (`trend`): an LSTM classifier leaving its
  plateau, whose information sits in the first steps, has an input
  gradient that rises 15-90x going back, smoothly, while its loss falls
  from 0.69 to 0.02, and nothing at its input says where the information
  sits. A rise that the loss does not follow is learning, as a norm spike
  is (`spikes`).

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

from keras_gradwatch import stats
from keras_gradwatch._detectors import base

# A profile needs this many judged lags after lag 0: with 3 or 4, one step
# near the loss decides the fitted rate.
MIN_GROWTH_LAGS = 8
# The far end at least this many times the lowest value (an order of
# magnitude), at a rate above the limit.
MIN_GROWTH = 10.0
# The far quarter's median this many times the lowest median of an equally
# long run of lags before it: a rise that holds over many lags.
MIN_STEADY_GROWTH = 3.0
# Input and probe sites: the rise from the lowest lag to the far end is cut
# into this many spans, and each must rise at the limit rate.
SPANS = 3


def content_mask(x):
    """Which steps of each row hold content, not padding.

    Padding is a run of identical steps (every feature equal), at least two
    long, that starts the row or ends it, whose value is the padding value:
    the first (or last) step of at least half of the rows, and of two rows
    at least. So `pad_sequences` padding, sentences filled up with spaces
    and masked tails of zeros are found, and two equal tokens that happen
    to start one row are not.

    Args:
        x: Array `(rows, time, ...)`.

    Returns:
        Boolean array `(rows, time)`, True where the step is content.

    Example:

    >>> content_mask(np.array([[0, 0, 5, 6, 7, 7, 7], [0, 0, 0, 3, 4, 7, 7],
    ...                        [0, 1, 2, 3, 4, 5, 6]])).astype(int).tolist()
    [[0, 0, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1, 1]]
    """
    x = np.asarray(x)
    rows, length = x.shape[:2]
    steps = x.reshape(rows, length, -1)
    padded = np.zeros((rows, length), dtype=bool)
    if length < 2:
        return ~padded
    same = np.all(steps[:, 1:] == steps[:, :-1], axis=2)  # step t+1 equals step t
    trailing = np.flip(np.logical_and.accumulate(np.flip(same, 1), axis=1), 1)
    trailing = np.concatenate([trailing, same[:, -1:]], axis=1)  # steps t..end equal
    leading = np.logical_and.accumulate(same, axis=1)
    leading = np.concatenate([same[:, :1], leading], axis=1)  # steps 0..t equal
    for run, end in ((trailing, -1), (leading, 0)):
        padded |= run & _is_padding_value(steps[:, end])[:, None]
    return ~padded


def _is_padding_value(ends):
    """Per row, whether its end step `ends[row]` is the value that at least
    half of the rows, and two at least, end with."""
    rows = ends.shape[0]
    equal = np.all(ends[:, None, :] == ends[None, :, :], axis=2).sum(axis=1)
    return (equal >= 2) & (2 * equal >= rows)


def content_share(arrays, length):
    """Per lag, the share of rows whose step holds content.

    Args:
        arrays: The probe batch's input arrays (any number; those without a
            time axis of `length` steps are skipped).
        length: The measured profile's length.

    Returns:
        A float array indexed by lag (lag 0 = the last step): 1.0 where
        every row holds content. A step is content if it is in any input.
        None when no input has `length` steps.

    Example:

    >>> x = np.array([[3, 4, 5, 0, 0], [3, 4, 0, 0, 0], [3, 4, 5, 6, 7]])
    >>> content_share([x], 5).round(2).tolist()
    [0.33, 0.33, 0.67, 1.0, 1.0]
    """
    masks = [
        content_mask(a) for a in (np.asarray(a) for a in arrays)
        if a.ndim >= 2 and a.shape[0] > 0 and a.shape[1] == length
    ]
    if not masks:
        return None
    return np.logical_or.reduce(masks).mean(axis=0)[::-1].astype("float64")


class GrowthInTime(base.Detector):
    """A time profile that grows going back in time.

    Args:
        max_decay_rate: The per-step rate above which a profile grows.
    """

    kind = "exploding"
    moment = "layer"
    needs = ("profile",)  # and, at input and probe sites, a stalled `trend`

    def __init__(self, max_decay_rate=1.05):
        self.max_decay_rate = max_decay_rate

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.max_decay_rate)

    def check(self, evidence):
        record = evidence.profile
        profile = np.asarray(record.profile, dtype="float64")
        if not np.isfinite(profile).all():
            return None
        trend = evidence.trend
        if record.site != "state" and (trend is None or not trend.stalled):
            return None  # a rise the loss does not follow is learning
        first, lags = _judged(profile, record.site, evidence.content)
        if lags is None or lags.size < MIN_GROWTH_LAGS:
            return None
        verdict = self._verdict(lags, record.site != "state")
        if verdict is None:
            return None
        rate, tail, rise = verdict
        far = first + lags.size - 1
        where = (
            f"over the {far} steps of the profile"
            if first == 1 and far == profile.size - 1
            else f"over lags {first}-{far}, where every probe sequence holds content "
            "(the other lags are padding)"
        )
        message = (
            f"The gradient of layer '{evidence.layer}' grows going back in time "
            f"(measured at step {evidence.step}, {base.site_words(record.site)}): "
            f"{where} it rises {rise:.3g}x from its lowest value to the far end; fitted "
            f"per step: {rate:.3f}x"
            + (f", {tail:.3f}x over the far quarter" if math.isfinite(tail) else "")
            + f" (limit max_decay_rate={self.max_decay_rate:g})"
            + ("" if record.site == "state" else f"; and {trend.describe()}")
            + ". The recurrence amplifies gradients: updates can blow up."
        )
        fastest = max(r for r in (rate, tail) if math.isfinite(r))
        return base.Finding(
            "exploding", evidence.layer, fastest, self.max_decay_rate, "profile", message,
            evidence={"rate": rate, "tail_rate": tail, "growth": rise,
                      "lags": (first, far), "site": record.site},
            advice="clip", remedy=_growth_advice(evidence.facts or base.LayerFacts()),
        )

    def _verdict(self, lags, input_like):
        """`(rate, tail rate, growth)` if `lags` (from the first judged lag
        on) grow, else None."""
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
        if input_like and not self._rises_throughout(lags):
            return None
        return rate, tail, rise

    def _rises_throughout(self, lags):
        """Whether the rise from the lowest lag to the far end holds in each
        of `SPANS` consecutive spans, at the limit rate."""
        rising = lags[int(np.argmin(lags)):]
        if rising.size < MIN_GROWTH_LAGS:
            return False
        size = rising.size // SPANS
        spans = [rising[rising.size - (SPANS - i) * size:][:size] for i in range(SPANS)]
        medians = [float(np.median(span)) for span in spans]
        needed = self.max_decay_rate**size
        return all(b >= needed * a for a, b in zip(medians, medians[1:]))


def _judged(profile, site, content):
    """`(first lag, values)`: the lags from 1 on that are judged; for input
    and probe sites with known content, the longest run of lags where every
    row holds content (None if there is none)."""
    if site == "state" or content is None or len(content) != profile.size:
        return 1, profile[1:]
    full = np.asarray(content, dtype="float64")[1:] >= 1.0 - 1e-9
    best, start = (0, 0), None
    for i, ok in enumerate(np.append(full, False)):
        if ok and start is None:
            start = i
        elif not ok and start is not None:
            best = max(best, (i - start, start))
            start = None
    length, begin = best
    if not length:
        return 1, None
    return begin + 1, profile[begin + 1: begin + 1 + length]


def _growth_advice(facts):
    if facts.gated:
        return ""  # the optimizer's advice (learning rate or clipping) says it
    return (
        "Also consider a smaller recurrent weight scale "
        "(recurrent_initializer='orthogonal'), a saturating activation (tanh "
        "rather than relu), or a gated layer (LSTM/GRU)."
    )
