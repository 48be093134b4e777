"""Gradient alerts: what they hold, how they are detected and reported.

Three kinds of alert, each with a concrete suggestion in its message:

- `"nonfinite"`: NaN or Inf in the loss or the gradients;
- `"exploding"`: a gradient norm far above its recent median, or above a
  user maximum, a loss jump, or a time profile that grows going back in time;
- `"vanishing"`: the far end of a measured profile receives less than a
  small fraction of the gradient at the loss.

An `AlertDispatcher` applies the action configured for each kind (`"warn"`,
`"stop"`, `"raise"`, a callable, or None: the kind is off) and rate-limits
repeats: the same kind on the same layer is reported at its 1st, 2nd, 4th,
8th... occurrence, each report saying how many were left unreported since
the previous one. Warnings point at the user's code that called `fit`, not
at a line inside this package or Keras.
"""

import collections
import dataclasses
import inspect
import logging
import math
import statistics
import warnings

from keras_gradwatch.errors import GradientAlertError
from keras_gradwatch.errors import GradientWarning
from keras_gradwatch.errors import InvalidInputError

KINDS = ("nonfinite", "exploding", "vanishing")
ACTIONS = ("warn", "stop", "raise")
DEFAULT_ACTIONS = {"nonfinite": "stop", "exploding": "warn", "vanishing": "warn"}
# Actions only some kinds take: "clip" (AutoClip) and "rollback" (`_rollback`).
EXTRA_ACTIONS = {"exploding": ("clip", "rollback"), "nonfinite": ("rollback",)}

logger = logging.getLogger("keras_gradwatch")
# A library logs only where the application configured logging; the
# GradientWarning is what reaches the console by default.
logger.addHandler(logging.NullHandler())


@dataclasses.dataclass(frozen=True)
class Alert:
    """One gradient alert.

    Attributes:
        kind: `"nonfinite"`, `"exploding"` or `"vanishing"`.
        step: Training step (counted across `fit` calls) it was seen at.
        epoch: Epoch (counted across `fit` calls), from 0.
        layer: Name of the layer concerned, or None for the whole model.
        value: The value that triggered it (a norm, a loss, a ratio...).
        threshold: The threshold it crossed, or None.
        message: What happened and what to do about it.
        signal: What was checked, e.g. `"grad_norm"`, `"loss"`,
            `"profile"`, `"layer_norm"`.
        suppressed: Occurrences of the same alert left unreported since the
            previous report.
    """

    kind: str
    step: int
    epoch: int
    layer: object
    value: float
    threshold: object
    message: str
    signal: str = ""
    suppressed: int = 0

    def to_dict(self):
        return dataclasses.asdict(self)


def resolve_actions(nonfinite, exploding, vanishing):
    """Validates the action of each kind (None switches a kind off)."""
    actions = {"nonfinite": nonfinite, "exploding": exploding, "vanishing": vanishing}
    for kind, action in actions.items():
        if action in EXTRA_ACTIONS.get(kind, ()):
            continue
        if action is not None and action not in ACTIONS and not callable(action):
            extra = {
                "exploding": " (or 'clip': warn and start adaptive clipping; 'rollback': warn, "
                             "go back to the last healthy weights and lower the learning rate).",
                "nonfinite": " (or 'rollback': warn, go back to the last healthy weights and "
                             "lower the learning rate).",
            }
            raise InvalidInputError(
                f"Received: {kind}={action!r}. Pass 'warn', 'stop', 'raise', "
                "a callable taking the Alert, or None to switch it off"
                + extra.get(kind, ".")
            )
    return actions


class AlertDispatcher:
    """Applies each alert's action, rate-limited per (kind, layer).

    Args:
        actions: Dict mapping each kind to its action.
        record: Function called with each reported `Alert` (to write it).
        stop: Function called for the `"stop"` action.
        clip: Function called for the `"clip"` action (exploding alerts:
            warn, and start clipping), or None.
        rollback: Function called for the `"rollback"` action (warn, and
            go back to the last healthy weights), or None. Both return a
            sentence saying what they did, added to the warning.
    """

    def __init__(self, actions, record, stop, clip=None, rollback=None):
        self.actions = actions
        self._record = record
        self._stop = stop
        self._clip = clip
        self._rollback = rollback
        self.counts = collections.Counter()  # every occurrence, per kind
        self._seen = collections.Counter()  # occurrences per (kind, layer)
        self._unreported = collections.Counter()

    def due(self, key):
        """Whether the next occurrence of `key` will be reported."""
        seen = self._seen[key] + 1
        return not seen & (seen - 1)  # the 1st, 2nd, 4th, 8th...

    def skip(self, kind, key):
        """Counts an occurrence that is not reported."""
        self.counts[kind] += 1
        self._seen[key] += 1
        self._unreported[key] += 1

    def active(self, kind):
        """Whether alerts of `kind` are on (their action is not None)."""
        return self.actions.get(kind) is not None

    def dispatch(self, alert, key=None):
        """Counts the alert; reports it and acts unless rate-limited.

        An alert whose kind is off (action None) is neither counted nor
        reported.

        Args:
            alert: The `Alert`.
            key: What counts as "the same alert" for rate limiting; defaults
                to `(kind, signal, layer)`.

        Returns:
            The reported alert (with its `suppressed` count), or None.
        """
        if not self.active(alert.kind):
            return None
        key = (alert.kind, alert.signal, alert.layer) if key is None else key
        if not self.due(key):
            self.skip(alert.kind, key)
            return None
        self.counts[alert.kind] += 1
        self._seen[key] += 1
        alert = dataclasses.replace(alert, suppressed=self._unreported.pop(key, 0))
        action = self.actions[alert.kind]
        if action == "rollback" and self._rollback is not None:
            # Done before the alert is recorded: its message says what was done.
            alert = dataclasses.replace(alert, message=alert.message + " " + self._rollback())
        self._record(alert)
        if callable(action):
            action(alert)
        elif action in ("warn", "clip", "rollback"):
            text = alert.message
            if action == "clip" and self._clip is not None:
                text += " " + self._clip()
            if alert.suppressed:
                text += (
                    f" ({alert.suppressed} similar alerts not shown since the "
                    "last one.)"
                )
            logger.warning(text)
            warnings.warn(text, GradientWarning, stacklevel=_user_stacklevel())
        elif action == "stop":
            logger.warning(alert.message + " Stopping training.")
            self._stop()
        elif action == "raise":
            raise GradientAlertError(alert)
        return alert


# Modules whose frames lie between the user's `fit` call and a warning.
_INTERNAL = ("keras_gradwatch", "keras", "tensorflow", "tf_keras", "absl")


def _user_stacklevel():
    """The `stacklevel` that points a warning at the first frame outside
    this package, Keras and TensorFlow (the user's `fit` call), counted from
    the function that calls `warnings.warn`."""
    frame = inspect.currentframe()
    # Skip this function and the function that warns: start at its caller.
    frame = frame.f_back.f_back if frame is not None and frame.f_back is not None else None
    level = 2
    while frame is not None:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] not in _INTERNAL:
            return level
        frame = frame.f_back
        level += 1
    return 2


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


def spike_ratio(value, history, warmup):
    """`value / median(history)` once `history` holds `warmup` values.

    Returns:
        The ratio, or None during the warm-up or when the median is zero.
    """
    if len(history) < warmup:
        return None
    median = history.median()
    if not median > 0:
        return None
    return value / median


def clip_suggestion(norms):
    """A `global_clipnorm` around the typical norm (Pascanu et al. 2013).

    Args:
        norms: A `RollingWindow` of recent finite gradient norms.

    Returns:
        The median recent norm rounded to 2 significant digits, or None
        when no norm was observed yet.
    """
    if not len(norms):
        return None
    median = norms.median()
    if not median > 0:
        return None
    return float(f"{median:.2g}")


def clip_advice(clipnorm, lead="Clip", optimizer="keras.optimizers.Adam"):
    """The sentence that suggests gradient clipping.

    Args:
        clipnorm: A suggested `global_clipnorm`, or None.
        lead: First word of the sentence ("Clip", or "or clip" to continue
            a sentence).
        optimizer: The model's optimizer class, as code, for the example.

    Example:

    >>> clip_advice(0.5, optimizer="keras.optimizers.SGD")
    'Clip gradients around the typical norm (Pascanu et al. 2013): optimizer=keras.optimizers.SGD(..., global_clipnorm=0.5).'
    """
    if clipnorm is None:
        return (
            f"{lead} gradients, e.g. optimizer={optimizer}("
            "..., global_clipnorm=1.0), with the threshold around the typical "
            "gradient norm once GradWatch has seen a few (Pascanu et al. 2013)."
        )
    return (
        f"{lead} gradients around the typical norm (Pascanu et al. 2013): "
        f"optimizer={optimizer}(..., global_clipnorm={clipnorm:g})."
    )
