"""Gradient alerts: what they hold, how they are detected and reported.

The kinds of alert come from one registry (`KIND_SPECS`, see
`keras_gradwatch._detectors.kinds`), each with a concrete suggestion in its
message:

- `"nonfinite"`: NaN or Inf in the loss or the gradients;
- `"exploding"`: a loss jump, a gradient-norm spike followed by a rising
  or non-finite loss, a gradient that overflows, a time profile that grows
  going back in time, or updates that rewrite a layer;
- `"vanishing"`: the far end of a measured profile receives less than a
  small fraction of the gradient at the loss, while the loss has stalled;
- `"truncation"`: truncated BPTT cuts off most of the measured gradient
  while the loss has stalled.

An `AlertDispatcher` applies the action configured for each kind (`"warn"`,
`"stop"`, `"raise"`, a callable, or None: the kind is off) and rate-limits
repeats: the same kind on the same layer is reported at its 1st, 2nd, 4th,
8th... occurrence, each report saying how many were left unreported since
the previous one. Warnings point at the user's code that called `fit`, not
at a line inside this package or Keras, and start on a line of their own
when a Keras progress bar holds the current one.
"""

import collections
import dataclasses
import inspect
import logging
import sys
import warnings

from keras_gradwatch.core._detectors import kinds as _kinds
from keras_gradwatch.core._detectors.base import RollingWindow
from keras_gradwatch.core.errors import GradientAlertError
from keras_gradwatch.core.errors import GradientWarning
from keras_gradwatch.core.errors import InvalidInputError

KIND_SPECS = _kinds.KINDS
KINDS = _kinds.NAMES
ACTIONS = ("warn", "stop", "raise")
DEFAULT_ACTIONS = {spec.name: spec.default_action for spec in KIND_SPECS}

__all__ = ["ACTIONS", "DEFAULT_ACTIONS", "KINDS", "KIND_SPECS", "Alert", "AlertDispatcher",
           "ProgressLine", "RollingWindow", "clip_advice", "clip_suggestion",
           "resolve_actions", "spike_ratio"]

logger = logging.getLogger("keras_gradwatch")
# A library logs only where the application configured logging; the
# GradientWarning is what reaches the console by default.
logger.addHandler(logging.NullHandler())


@dataclasses.dataclass(frozen=True)
class Alert:
    """One gradient alert.

    Attributes:
        kind: A name in `KINDS`: `"nonfinite"`, `"exploding"`,
            `"vanishing"` or `"truncation"`.
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
        evidence: The numbers the verdict rests on, by name (as its message
            states them), e.g. `{"grad_norm": 50.0, "spike_step": 31,
            "loss": 3.0, "loss_top": 1.0, "loss_level": 1.0, ...}`.
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
    evidence: dict = dataclasses.field(default_factory=dict)

    def to_dict(self):
        return dataclasses.asdict(self)


def resolve_actions(actions=None):
    """The action of every kind: `actions` over the registry's defaults.

    Args:
        actions: Dict mapping kinds to actions (`"warn"`, `"stop"`,
            `"raise"`, a callable taking the `Alert`, None to switch the
            kind off, or a kind's extra action such as `"clip"` for
            `"exploding"`). Kinds left out keep their default.

    Returns:
        A dict with every kind of `KINDS`.

    Raises:
        InvalidInputError: An unknown kind or action, naming it.

    Example:

    >>> resolve_actions({"vanishing": None})["vanishing"] is None
    True
    """
    resolved = dict(DEFAULT_ACTIONS)
    for kind, action in (actions or {}).items():
        spec = _kinds.spec(kind)
        if spec is None:
            raise InvalidInputError(
                f"Received an action for kind {kind!r}. The kinds are: "
                + ", ".join(repr(k) for k in KINDS) + "."
            )
        if action is not None and not callable(action) and action not in (
            ACTIONS + spec.extra_actions
        ):
            extra = "".join(f" or {a!r}" for a in spec.extra_actions)
            raise InvalidInputError(
                f"Received: {kind}={action!r}. Pass 'warn', 'stop', 'raise'{extra}, "
                "a callable taking the Alert, or None to switch it off."
            )
        resolved[kind] = action
    return resolved


class ProgressLine:
    """Whether a Keras progress bar holds the console's current line.

    Keras's `ProgbarLogger` (`fit(verbose=1)`) redraws its bar with a
    carriage return and ends the line only when the epoch ends; a warning
    printed meanwhile lands in the middle of the bar. The callback sets
    `open` while the bar's line is open; `end` starts a new line first.
    """

    def __init__(self):
        self.open = False

    def end(self):
        """Ends the bar's line (once) so that what follows has its own."""
        if self.open:
            self.open = False
            try:
                sys.stdout.write("\n")
                sys.stdout.flush()
            except (OSError, ValueError, AttributeError):
                pass  # a closed or missing stdout: nothing to end


class AlertDispatcher:
    """Applies each alert's action, rate-limited per (kind, layer).

    Args:
        actions: Dict mapping each kind to its action.
        record: Function called with each reported `Alert` (to write it).
        stop: Function called for the `"stop"` action.
        clip: Function called for the `"clip"` action (exploding alerts:
            warn, and start clipping), or None.
        line: A `ProgressLine` ended before a warning, or None.
        rollback: Function called for the `"rollback"` action (warn, and
            go back to the last healthy weights), or None. Both return a
            sentence saying what they did, added to the warning.
    """

    def __init__(self, actions, record, stop, clip=None, line=None, rollback=None):
        self.actions = actions
        self.line = line
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
            if self.line is not None:
                self.line.end()
            logger.warning(text)
            warnings.warn(text, GradientWarning, stacklevel=_user_stacklevel())
        elif action == "stop":
            if self.line is not None:
                self.line.end()
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
