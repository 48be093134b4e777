"""Private: `TruncatedBPTT(window="auto")`, the window set from measurement.

The rule follows Aicher, Foti & Fox (2019), "Adaptively Truncating
Backpropagation Through Time to Control Gradient Bias": measure how the
gradient of the loss at one step decays with the number of steps back
(`measurement.measure` with `loss_steps="last"`), and use the smallest
window whose truncation bias, the share of that gradient beyond the window
(`stats.truncation_bias`), is at most a tolerance.

How it moves: the window starts at `max_window`, the least biased choice.
It grows at once to any size the measurement asks for; it shrinks one size
at a time, and not before the end of the first epoch (or `WARMUP_STEPS`
steps): at initialisation the model has not learned any memory yet, so the
measured decay says nothing of the dependencies in the data. Windows come
from a short list of sizes (`sizes`) so that a training step traced per
window (see `TruncatedBPTT`) is traced at most once per size.

When the window sits at `max_window` and still cuts off more than
`tolerance` of the measured gradient, it says so: a warning (once, until it
leaves that state) and `capped: True` with the bias at the window in use
(`capped_bias`) in its decision (`TruncatedBPTT.window_decisions`, and the
`auto_window` field of GradWatch's `summary.json`).
"""

import numbers
import warnings

import keras
import numpy as np

from keras_gradwatch.core import _probe
from keras_gradwatch.core import alerts
from keras_gradwatch.core import measurement
from keras_gradwatch.core import stats
from keras_gradwatch.core.errors import InvalidInputError

DEFAULT_TOLERANCE = 0.1
DEFAULT_MIN_WINDOW = 2
DEFAULT_MAX_WINDOW = 100
# Shrinking waits for the first epoch's end, or this many steps of it.
WARMUP_STEPS = 200
# A smaller window must cut off at most this share of `tolerance`: moving
# down can cut a dependency the model has not learned yet (and so cannot
# be measured), moving up costs only time.
SHRINK_MARGIN = 0.1
# A measurement at training steps 16, 32, 64, 128, 256 (counted over the
# wrapper's life, across `fit` calls), then every `EVERY_STEPS` steps, and
# at every epoch end. Each costs about one training step on
# `_probe.PROBE_ROWS` sequences.
FIRST_STEP = 16
EVERY_STEPS = 256


def check_settings(tolerance, min_window, max_window):
    """Validated `(tolerance, min_window, max_window)`, defaults filled in."""
    tolerance = DEFAULT_TOLERANCE if tolerance is None else tolerance
    min_window = DEFAULT_MIN_WINDOW if min_window is None else min_window
    max_window = DEFAULT_MAX_WINDOW if max_window is None else max_window
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not 0 < tolerance < 1:
        raise InvalidInputError(
            f"Received: tolerance={tolerance!r}. Pass the largest share of the "
            "gradient the window may cut off, a fraction in (0, 1), e.g. 0.1."
        )
    for name, value in (("min_window", min_window), ("max_window", max_window)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise InvalidInputError(
                f"Received: {name}={value!r}. Pass a positive integer number "
                "of time steps."
            )
    if min_window > max_window:
        raise InvalidInputError(
            f"Received: min_window={min_window}, max_window={max_window}. "
            "Pass min_window <= max_window."
        )
    return float(tolerance), int(min_window), int(max_window)


def sizes(min_window: int, max_window: int) -> list:
    """The windows `window="auto"` may use: the bounds and the powers of two
    between them.

    Example:

    >>> sizes(2, 100)
    [2, 4, 8, 16, 32, 64, 100]
    """
    powers = [2**k for k in range(1, max_window.bit_length() + 1)]
    inside = [p for p in powers if min_window < p < max_window]
    return sorted({min_window, *inside, max_window})


def wanted_window(profiles, choices, tolerance: float) -> int:
    """The smallest of `choices` whose truncation bias is at most `tolerance`
    for every profile (the largest choice if none is).

    Args:
        profiles: 1-D arrays indexed by lag, one per measured layer.
        choices: Sorted window sizes.
        tolerance: Largest acceptable share of gradient mass cut off.

    Example:

    >>> wanted_window([[4.0, 2.0, 1.0, 1.0]], [1, 2, 4], tolerance=0.3)
    2
    """
    wanted = choices[0]
    for profile in profiles:
        # The bias falls as the window grows: the sizes from the suggested
        # window up are within tolerance.
        needed = stats.suggested_window(profile, tolerance)
        fits = [k for k in choices if k >= needed]
        wanted = max(wanted, fits[0] if fits else choices[-1])
    return wanted


def next_window(current: int, wanted: int, choices, length=None, may_shrink=True) -> int:
    """The window after a measurement that asks for `wanted`.

    Grows at once; shrinks by one size, and only when `may_shrink`. Sizes
    of at least `length` (the measured sequence length) all cover a whole
    sequence: moving between them changes nothing but costs a trace.

    Example:

    >>> next_window(64, 8, [2, 4, 8, 16, 32, 64, 100])
    32
    >>> next_window(8, 32, [2, 4, 8, 16, 32, 64, 100])
    32
    """
    if length is not None:
        whole = [k for k in choices if k >= length]
        if whole and current >= whole[0] and wanted >= whole[0]:
            return current
    if wanted > current:
        return wanted
    if wanted < current and may_shrink:
        below = [k for k in choices if wanted <= k < current]
        if length is not None and current >= length:
            # Sizes at or above the length act alike: step down from there.
            below = [k for k in below if k < length] or below
        return max(below) if below else current
    return current


class AutoWindow(keras.callbacks.Callback):
    """Measures the gradient's decay during `fit` and sets the window.

    One instance lives with its `TruncatedBPTT` across `fit` calls (a
    script calling `fit(epochs=1)` in a loop adapts as one run would).

    Args:
        wrapper: The `TruncatedBPTT` model.
        tolerance: Largest acceptable truncation bias.
        min_window: Smallest window.
        max_window: Largest window, the starting one.
    """

    def __init__(self, wrapper, tolerance, min_window, max_window):
        super().__init__()
        self._wrapper = wrapper
        self.tolerance = tolerance
        self.choices = sizes(min_window, max_window)
        self.probe = None
        self.steps = 0
        self.epochs = 0
        self._decided_at = None
        # What each decision saw: dicts of step, wanted, window, bias,
        # capped and capped_bias.
        self.decisions = []
        self._line = alerts.ProgressLine()
        self._bar = False

    def on_train_begin(self, logs=None):
        verbose = (self.params or {}).get("verbose")
        self._bar = verbose in (1, "auto") and keras.config.is_interactive_logging_enabled()

    def on_epoch_begin(self, epoch, logs=None):
        self._line.open = False

    def wants_probe(self):
        return self.probe is None

    def take_probe(self, batch, strategy):
        """Keeps the first sequences of a training batch (as the iterator
        yields it) to measure on, all along."""
        self.probe = _probe.from_batch(batch, strategy)

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        step = self.steps
        early = FIRST_STEP <= step <= EVERY_STEPS and step & (step - 1) == 0  # a power of 2
        if early or step % EVERY_STEPS == 0:
            self.decide()
        self._line.open = self._bar  # the progress bar draws this step next

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1
        self.decide()

    def on_train_end(self, logs=None):
        self._line.open = False

    def decide(self):
        """Measures on the probe batch and moves the window if it should."""
        if self.probe is None or self._decided_at == self.steps:
            return
        self._decided_at = self.steps
        x, y, sample_weight = self.probe
        result = measurement.measure(
            self._wrapper, x, y, sample_weight=sample_weight, loss_steps="last",
            tolerance=self.tolerance,
        )
        profiles = [record.profile for record in result.layers.values()]
        if not profiles or not all(np.isfinite(p).all() for p in profiles):
            return  # nothing to go by; an exploding run is GradWatch's to report
        current = self._wrapper.window
        wanted = wanted_window(profiles, self.choices, self.tolerance)
        if wanted <= current:
            # Within tolerance: shrink only to a size well within it.
            wanted = wanted_window(profiles, self.choices, self.tolerance * SHRINK_MARGIN)
            wanted = min(wanted, current)
        warm = self.epochs > 0 or self.steps >= WARMUP_STEPS
        window = next_window(current, wanted, self.choices, result.length, may_shrink=warm)
        capped_bias = max(stats.truncation_bias(p, window) for p in profiles)
        capped = window == self.choices[-1] and capped_bias > self.tolerance
        was_capped = bool(self.decisions) and self.decisions[-1].get("capped")
        self.decisions.append(
            {
                "step": self.steps,
                "window": window,
                "wanted": wanted,
                "bias": max(stats.truncation_bias(p, current) for p in profiles),
                "capped": capped,
                "capped_bias": capped_bias,
            }
        )
        if window != current:
            self._wrapper.window = window
        if capped and not was_capped:
            self._warn_capped(window, capped_bias, profiles, result.length)

    def _warn_capped(self, window, bias, profiles, length):
        needed = max(stats.suggested_window(p, self.tolerance) for p in profiles)
        further = (
            f"max_window={needed} would cut off at most that"
            if needed < length
            else f"the gradient reaches past the {length} measured steps: a larger "
            "max_window cuts off less"
        )
        self._line.end()
        warnings.warn(
            f"TruncatedBPTT(window='auto') sits at max_window={window} (step "
            f"{self.steps}): the window cuts off {bias:.0%} of the measured gradient, "
            f"more than tolerance={self.tolerance:g}; {further}. Pass a larger "
            "max_window, or accept the bias.",
            stacklevel=alerts._user_stacklevel(),
        )


def describe(tolerance, min_window, max_window):
    """How `summary()` and the records name the setting."""
    return f"auto (tolerance={tolerance:g}, {min_window}..{max_window} steps)"

