"""Statistics of a gradient-decay profile.

A profile is a 1-D array indexed by lag: `profile[k]` is the size of the
gradient `k` steps back in time from the loss (lag 0 = the step nearest the
loss), e.g. the mean over a batch of ‖∂L/∂h_{T-1-k}‖. Every function here is
pure: it takes a profile (any array-like) and returns a Python number.

Entries that are NaN or infinite carry no information and are ignored.
Zero, constant, one-step and all-NaN profiles give defined results,
documented on each function.
"""

import math

import numpy as np

from keras_gradwatch.core.errors import InvalidInputError

DEFAULT_HORIZON_THRESHOLD = 1e-2
DEFAULT_BIAS_TOLERANCE = 0.05


def _as_profile(profile):
    values = np.asarray(profile, dtype="float64")
    if values.ndim != 1:
        raise InvalidInputError(
            f"Received a profile with shape {values.shape}. Pass a 1-D array "
            "indexed by lag (lag 0 = the step nearest the loss)."
        )
    return values


def _check_window(window, name="window"):
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)):
        raise InvalidInputError(
            f"Received: {name}={window!r}. Pass a positive integer number of "
            "time steps."
        )
    if window < 1:
        raise InvalidInputError(
            f"Received: {name}={window}. Pass a positive integer number of "
            "time steps."
        )


def decay_rate(profile) -> float:
    """Per-step factor by which the gradient shrinks going back in time.

    Fits `log(profile[k]) = a + k * log(rate)` by least squares over the lags
    whose value is finite and positive, and returns `rate`. A rate below 1
    means the gradient vanishes with distance (0.9: it loses 10 % per step);
    above 1, it grows going back in time. A rate describes the profile; it
    is not a verdict (growth also comes from where the informative inputs
    sit, e.g. a sentence padded at its end): the alerts decide what explodes.

    Args:
        profile: 1-D array indexed by lag.

    Returns:
        The fitted factor. `0.0` when the gradient is zero at every lag
        after at most one nonzero one (it vanishes at once); `nan` when there
        is nothing to fit (an empty, all-NaN or one-step profile).

    Example:

    >>> round(decay_rate([1.0, 0.5, 0.25, 0.125]), 6)
    0.5
    """
    values = _as_profile(profile)
    finite = np.isfinite(values)
    usable = finite & (values > 0)
    if usable.sum() >= 2:
        lags = np.flatnonzero(usable).astype("float64")
        slope = np.polyfit(lags, np.log(values[usable]), 1)[0]
        return float(math.exp(slope))
    if finite.sum() >= 2:
        return 0.0
    return float("nan")


def tail_decay_rate(profile, fraction: float = 0.25) -> float:
    """`decay_rate` of the far end of the profile (its last `fraction`).

    Far from the loss, the profile follows the recurrence's own rate: a
    gradient that first falls and then grows again with the lag is
    exploding, even when the rate fitted over the whole profile is below 1.

    Args:
        profile: 1-D array indexed by lag.
        fraction: Share of the lags, counted from the far end (default a
            quarter).

    Returns:
        The fitted factor over the far lags (see `decay_rate` for edge
        cases).

    Example:

    >>> round(tail_decay_rate([8.0, 4.0, 2.0, 1.0, 2.0, 4.0, 8.0], 0.5), 6)
    2.0
    """
    if not 0 < fraction <= 1:
        raise InvalidInputError(
            f"Received: fraction={fraction!r}. Pass a share of the lags in "
            "(0, 1], e.g. 0.5."
        )
    values = _as_profile(profile)
    start = int(values.size - math.ceil(values.size * fraction))
    return decay_rate(values[start:])


def growth(profile) -> float:
    """How much the gradient grows going back in time, over the profile.

    The value at the far end of the profile divided by the lowest value at
    lags 1 to the far end (lag 0 is left out: it also holds the direct path
    from the layer's output to the loss). A gradient that vanishes gives
    1 (its far end is its lowest value); one that dips and then grows by
    10x gives 10, whatever its per-step rate. A growth far above 1 over
    many lags is the evidence of an exploding recurrence; a single large
    step near the loss is not.

    Args:
        profile: 1-D array indexed by lag.

    Returns:
        The factor (>= 1); `nan` when fewer than two lags from lag 1 on are
        finite and positive.

    Example:

    >>> growth([5.0, 1.0, 0.5, 2.0, 4.0])
    8.0
    """
    values = _as_profile(profile)[1:]
    usable = values[np.isfinite(values) & (values > 0)]
    if usable.size < 2:
        return float("nan")
    return float(usable[-1] / usable.min())


def horizon(profile, threshold: float = DEFAULT_HORIZON_THRESHOLD) -> int:
    """How many steps back the gradient reaches.

    The first lag (from lag 1 on) whose value falls below `threshold` times
    the reference: the value at lag 1, the gradient entering the recurrence.
    Lag 0 is not the reference because it also holds the direct path from
    the layer's output to the loss, which can dwarf everything the
    recurrence carries. (A one-step profile uses lag 0; a zero or non-finite
    reference falls back on the largest finite value.)

    Args:
        profile: 1-D array indexed by lag.
        threshold: Fraction of the reference, default 0.01 (1 %).

    Returns:
        The first lag below the threshold; `len(profile)` if no lag is below
        it (the gradient reaches through the whole profile); `0` for an
        all-zero, all-NaN or empty profile.

    Example:

    >>> horizon([1.0, 0.5, 0.25, 0.001])
    3
    """
    if not threshold > 0:
        raise InvalidInputError(
            f"Received: threshold={threshold!r}. Pass a positive fraction of "
            "the gradient entering the recurrence, e.g. 0.01."
        )
    values = _as_profile(profile)
    finite = np.isfinite(values)
    if not finite.any():
        return 0
    start = 1 if values.size > 1 else 0
    if finite[start] and values[start] > 0:
        reference = values[start]
    else:
        reference = values[finite].max()
    if reference <= 0:
        return 0
    below = np.flatnonzero(finite[start:] & (values[start:] < threshold * reference))
    return int(below[0]) + start if below.size else int(values.size)


def truncation_bias(profile, window: int) -> float:
    """Share of the gradient mass beyond `window` steps.

    In the spirit of Aicher, Foti & Fox (2019): truncating backpropagation
    after `window` steps drops the gradient at lags `window, window+1, ...`;
    this is their share of the total `sum(profile)`.

    Args:
        profile: 1-D array indexed by lag.
        window: Positive int, the number of steps back-propagated through.

    Returns:
        A fraction in [0, 1]; `0.0` when the profile holds no mass (all
        zero, all NaN, empty) or `window >= len(profile)`.

    Example:

    >>> truncation_bias([4.0, 2.0, 1.0, 1.0], window=2)
    0.25
    """
    _check_window(window)
    values = _as_profile(profile)
    values = np.where(np.isfinite(values), np.abs(values), 0.0)
    total = values.sum()
    if total <= 0:
        return 0.0
    return float(values[window:].sum() / total)


def suggested_window(
    profile, tolerance: float = DEFAULT_BIAS_TOLERANCE
) -> int:
    """The smallest window whose truncation bias is at most `tolerance`.

    Args:
        profile: 1-D array indexed by lag.
        tolerance: Largest acceptable share of gradient mass cut off,
            default 0.05 (5 %).

    Returns:
        A window in `[1, len(profile)]`; `1` for a profile with no mass.
        `len(profile)` means the gradient still carries weight at the end of
        the profile: measure a longer sequence to see how far it reaches.

    Example:

    >>> suggested_window([4.0, 2.0, 1.0, 1.0], tolerance=0.3)
    2
    """
    if not 0 <= tolerance < 1:
        raise InvalidInputError(
            f"Received: tolerance={tolerance!r}. Pass a fraction in [0, 1), "
            "e.g. 0.05."
        )
    values = _as_profile(profile)
    values = np.where(np.isfinite(values), np.abs(values), 0.0)
    total = values.sum()
    if total <= 0 or values.size == 0:
        return 1
    # beyond[k] = share of mass at lags >= k + 1, i.e. the bias of window k+1.
    beyond = 1.0 - np.cumsum(values) / total
    fits = np.flatnonzero(beyond <= tolerance + 1e-12)
    return int(fits[0]) + 1 if fits.size else int(values.size)
