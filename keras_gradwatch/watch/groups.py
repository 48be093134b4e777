"""`GradWatch`'s settings in groups: `Measuring`, `Alerting`, `AutoClip`.

`GradWatch(log_dir, measuring=..., alerting=..., clip=...)` takes each
group as one small frozen object, checked when made (a bad value is an
error there, naming it and the fix). The groups' fields are their
docstrings' `Args` and, flattened under their own names, `run.json`'s
`settings`.

Example:

>>> import tempfile
>>> from keras_gradwatch import Alerting, AutoClip, GradWatch, Measuring
>>> watch = GradWatch(tempfile.mkdtemp(),
...                   measuring=Measuring(loss_steps="all"),
...                   alerting=Alerting(vanishing=None, spike_factor=20),
...                   clip=AutoClip(percentile=50))
>>> watch.spike_factor, watch.loss_steps, watch.clip_percentile
(20.0, 'all', 50.0)
"""

import dataclasses

from keras_gradwatch.core import alerts
from keras_gradwatch.core import measurement
from keras_gradwatch.core import stats
from keras_gradwatch.core._detectors import kinds as _kinds
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.watch import _autoclip
from keras_gradwatch.watch import _fields
from keras_gradwatch.watch._fields import setting

# Kinds with a field of their own in `Alerting`.
OWN_ARGUMENTS = ("nonfinite", "exploding", "vanishing")


def _loss_steps(value, name):
    if value not in measurement.LOSS_STEPS:
        raise InvalidInputError(f"Received: {name}={value!r}. Pass 'last' or 'all'.")
    return value


def _percentile(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
        raise InvalidInputError(
            f"Received: {name}={value!r}. Pass a percentile in "
            "(0, 100], e.g. 90 (the default)."
        )
    return float(value)


def check_actions(actions, name="actions"):
    """`Alerting(actions=...)`: a dict of the other kinds' actions."""
    if actions is None:
        return None
    if not isinstance(actions, dict):
        raise InvalidInputError(
            f"Received: {name}={actions!r}. Pass a dict mapping alert kinds to "
            "actions, e.g. actions={'truncation': None}."
        )
    own = [kind for kind in actions if kind in OWN_ARGUMENTS]
    if own:
        raise InvalidInputError(
            f"Received: {name}={actions!r}. {own[0]!r} has an argument of its own: "
            f"pass {own[0]}={actions[own[0]]!r} instead."
        )
    return dict(actions)


@_fields.with_args
@dataclasses.dataclass(frozen=True)
class AutoClip:
    """Adaptive gradient clipping (AutoClip, Seetharaman et al. 2020).

    Clips every update's gradients at `percentile` of the global norms of
    the updates before it, inside the compiled step, for plain models and
    each `TruncatedBPTT` window update. `GradWatch(clip=AutoClip())` (or
    `clip="auto"`) clips from the first update on;
    `Alerting(exploding=AutoClip())` (or `exploding="clip"`) from the
    first exploding alert on. See `docs/clipping.md`.

    {fields}

    Raises:
        InvalidInputError: A percentile outside (0, 100].

    Example:

    >>> from keras_gradwatch import AutoClip
    >>> AutoClip(percentile=10)
    AutoClip(percentile=10.0)
    >>> AutoClip(percentile=0)
    Traceback (most recent call last):
    ...
    keras_gradwatch.core.errors.InvalidInputError: Received: percentile=0. Pass a percentile in (0, 100], e.g. 90 (the default).
    """  # noqa: E501

    percentile: float = setting(_autoclip.DEFAULT_PERCENTILE, check=_percentile, doc="""
        The percentile, in (0, 100]; default 90: a healthy run's
        updates above the 90th percentile of the norms before them, about
        one in ten, are clipped, a spike back to that level.""")

    def __post_init__(self):
        _fields.check_fields(self)


def _loss(settings):
    return {"loss": _fields.named(settings.loss)}


@_fields.with_args
@dataclasses.dataclass(frozen=True, eq=False)  # probe_data may be arrays
class Measuring:
    """What `GradWatch`'s measurements on the probe batch use.

    `GradWatch(log_dir, measuring=Measuring(...))`; the fields left out
    keep their defaults.

    {fields}

    Raises:
        InvalidInputError: Naming the field, what was received and what to
            pass instead.

    Example:

    >>> import numpy as np
    >>> from keras_gradwatch import Measuring
    >>> x, y = np.zeros((16, 20, 1)), np.zeros((16, 1))
    >>> measuring = Measuring(probe_data=(x, y), loss_steps="all")
    >>> measuring.loss_steps, measuring.threshold
    ('all', 0.01)
    >>> Measuring(loss_steps="first")
    Traceback (most recent call last):
    ...
    keras_gradwatch.core.errors.InvalidInputError: Received: loss_steps='first'. Pass 'last' or 'all'.
    """  # noqa: E501

    probe_data: object = setting(None, doc="""
        `(x, y)`, `(x, y, sample_weight)` or `x` to measure
        on. Default: the first `PROBE_ROWS` (16) sequences of the first
        training batch, with their sample weights.""")
    loss: object = setting(None, record=_loss, doc="""
        Loss of the measurements; defaults to the model's training
        objective (compiled losses with their weights, `add_loss`
        terms, regularisation). A model without one is not measured:
        the warning and `measurement_error` in `summary.json` say why.""")
    loss_steps: str = setting("last", check=_loss_steps, record=True, doc="""
        `"last"` (default) or `"all"`, see `measure`.""")
    threshold: float = setting(stats.DEFAULT_HORIZON_THRESHOLD, record=True, doc="""
        Relative threshold of the `horizon` statistic.""")
    tolerance: float = setting(stats.DEFAULT_BIAS_TOLERANCE, record=True, doc="""
        Tolerance of the `suggested_window` statistic (and of
        the span a `truncation` alert suggests).""")

    def __post_init__(self):
        _fields.check_fields(self)

    def __eq__(self, other):
        # The same probe batch (by identity: arrays do not compare to a
        # bool) and equal other fields.
        if type(other) is not Measuring:
            return NotImplemented
        return self.probe_data is other.probe_data and all(
            getattr(self, f.name) == getattr(other, f.name)
            for f in dataclasses.fields(self) if f.name != "probe_data")

    __hash__ = None

    def recorded(self):
        """Its part of `run.json`'s `settings`."""
        return _fields.recorded(self)


def _actions(settings):
    return {"actions": {kind: _fields.named(action)
                        for kind, action in settings.actions_by_kind.items()}}


@_fields.with_args
@dataclasses.dataclass(frozen=True)
class Alerting:
    """`GradWatch`'s detectors and what it does when they fire.

    `GradWatch(log_dir, alerting=Alerting(...))`; the fields left out
    keep their defaults. Every alert states the evidence it rests on (see
    `keras_gradwatch.alerts` and docs/gradwatch.md).

    {fields}

    Attributes:
        actions_by_kind: The action of every alert kind, resolved
            (`alerts.resolve_actions`) from `nonfinite`, `exploding`,
            `vanishing` and `actions`; an `AutoClip` action is `"clip"`.

    Raises:
        InvalidInputError: Naming the field, what was received and what to
            pass instead.

    Example:

    >>> from keras_gradwatch import Alerting, AutoClip
    >>> alerting = Alerting(exploding=AutoClip(percentile=10), vanishing=None,
    ...                     actions={"truncation": None}, spike_factor=20)
    >>> alerting.actions_by_kind["exploding"], alerting.spike_factor
    ('clip', 20.0)
    >>> Alerting(warmup=0)
    Traceback (most recent call last):
    ...
    keras_gradwatch.core.errors.InvalidInputError: Received: warmup=0. Pass a positive integer.
    """

    nonfinite: object = setting("stop", doc="""
        Action on NaN/Inf: `"stop"` (default), `"warn"`,
        `"raise"`, a callable taking the `Alert`, None (off), or
        `"rollback"` (see `exploding`).""")
    exploding: object = setting("warn", doc="""
        Action on exploding gradients (default `"warn"`), or
        `"clip"` (or an `AutoClip`, for its percentile): warn, and start
        adaptive clipping (it cannot bound the step of an adaptive
        optimizer such as Adam), or `"rollback"`: warn, go back to the
        last healthy weights and optimizer state, lower the learning
        rate 10x, and train on (the rescue from a learning rate too
        high, which clipping does not give with adaptive optimizers; see
        `docs/clipping.md`). Each rollback is in the alert's message and
        in `summary.json` (`rollbacks`). Opt-in: no other action changes
        training.""")
    vanishing: object = setting("warn", doc="""
        Action on vanishing gradients (default `"warn"`).""")
    actions: object = setting(None, check=check_actions, record=_actions, doc="""
        Dict of the actions of the other kinds, e.g.
        `{"truncation": None}` (default: each kind's default, `"warn"`
        for `"truncation"`).""")
    spike_factor: float = setting(10.0, check=_fields.positive_float, record=True, doc="""
        A loss above `spike_factor` times the highest of its
        last 100 steps in the same `fit` call is a jump (exploding); a
        gradient norm above `spike_factor` times the 90th percentile of
        its last 100 values is a spike, exploding only when the loss
        then rises above its recent level or turns non-finite within 3
        steps (default 10).""")
    warmup: int = setting(5, check=_fields.positive_integer, record=True, doc="""
        Number of values the histories need before `spike_factor`
        applies (default 5). Before that, from the second step on, a
        value above `spike_factor ** 2` times the largest so far is a
        jump: abrupt blow-ups are caught from the first steps.""")
    max_grad_norm: object = setting(None, check=_fields.optional(_fields.positive),
                                    record=True, doc="""
        Optional hard ceiling on the global gradient norm.""")
    max_decay_rate: float = setting(1.05, check=_fields.positive_float, record=True, doc="""
        A profile grows going back in time (exploding) when,
        over at least 8 lags, its per-step rate fitted from lag 1 (over
        all lags or the far quarter) exceeds this (default 1.05) and its
        far end is at least 10x its lowest value.""")
    vanishing_fraction: float = setting(1e-3, check=_fields.positive_float, record=True, doc="""
        A profile whose far end holds less than this
        fraction of the gradient at lag 0 is vanishing (default 1e-3).
        The far end is the profile's last lag, or on `TruncatedBPTT`
        models the last lag within `backprop`.""")
    vanishing_patience: int = setting(3, check=_fields.positive_integer, record=True, doc="""
        Vanishing is reported when it holds at this
        many consecutive measurements (default 3), not counting those of
        the first epoch or of the first 200 optimizer updates, and the
        loss has stalled (the validation loss, else the epoch-mean
        training loss, not 1 % below its best earlier epoch).""")

    def __post_init__(self):
        _fields.check_fields(self)
        own = {kind: _action_name(kind, getattr(self, kind)) for kind in OWN_ARGUMENTS}
        resolved = alerts.resolve_actions({**(self.actions or {}), **own})
        object.__setattr__(self, "actions_by_kind", resolved)

    @property
    def clip_action(self):
        """The `AutoClip` of an `exploding=AutoClip(...)` action, or None."""
        return self.exploding if isinstance(self.exploding, AutoClip) else None

    def recorded(self):
        """Its part of `run.json`'s `settings`."""
        return _fields.recorded(self)


def _action_name(kind, action):
    """An `AutoClip` action is the kind's `"clip"` action (where it has
    one; elsewhere it stays, and is refused by name)."""
    spec = _kinds.spec(kind)
    if isinstance(action, AutoClip) and spec is not None and "clip" in spec.extra_actions:
        return "clip"
    return action


__all__ = ["Alerting", "AutoClip", "Measuring"]
