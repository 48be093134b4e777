"""Private: `GradWatch`'s settings, one validated object.

Each setting is written once, as a field of `WatchSettings`: its default,
its check, whether `run.json` records it and its documentation. From the
fields come the checks of `GradWatch(...)`'s arguments (`WatchSettings`
checks itself when made), the `Args` section of `GradWatch`'s docstring
(`args_doc`) and the `settings` of `run.json` (`record`). A test checks
that `GradWatch`'s signature lists the fields, in order, with their
defaults.
"""

import dataclasses
import textwrap

from keras_gradwatch.core import alerts
from keras_gradwatch.core import measurement
from keras_gradwatch.core import stats
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.runs import records
from keras_gradwatch.watch import _autoclip

PLOT_MODES = ("end", "epoch", None)
DEFAULT_CLIP_PERCENTILE = _autoclip.DEFAULT_PERCENTILE

# Kinds with an argument of their own in `GradWatch`'s signature.
OWN_ARGUMENTS = ("nonfinite", "exploding", "vanishing")


def positive(value, name, integer=False):
    """Raises `InvalidInputError` unless `value` is a positive number."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise InvalidInputError(f"Received: {name}={value!r}. Pass {what}.")
    return value


def _positive_float(value, name):
    return float(positive(value, name))


def _positive_integer(value, name):
    return positive(value, name, integer=True)


def _optional(check):
    return lambda value, name: value if value is None else check(value, name)


def _folder(value, name):
    if not isinstance(value, (str, bytes)) and not hasattr(value, "__fspath__"):
        raise InvalidInputError(
            f"Received: {name}={value!r}. Pass a folder path, e.g. "
            "GradWatch('runs/exp1')."
        )
    return value


def _loss_steps(value, name):
    if value not in measurement.LOSS_STEPS:
        raise InvalidInputError(f"Received: {name}={value!r}. Pass 'last' or 'all'.")
    return value


def _plots(value, name):
    if value not in PLOT_MODES:
        raise InvalidInputError(
            f"Received: {name}={value!r}. Pass 'end' (plots and report at "
            "the end of training), 'epoch' (also at epoch ends) or None "
            "(none; `gradwatch report RUN_DIR` draws them later)."
        )
    return value


def _tensorboard(value, name):
    if value:
        try:
            import tensorboard as _  # noqa: F401
        except ImportError as error:
            raise InvalidInputError(
                f"Received: {name}=True, but the tensorboard package "
                "is not installed. Run `pip install tensorboard` (or "
                "`pip install keras-gradwatch[tensorboard]`), or leave "
                "tensorboard=False."
            ) from error
    return value


def _clip(value, name):
    if value not in (None, "auto"):
        raise InvalidInputError(
            f"Received: {name}={value!r}. Pass clip='auto' (clip every update at a "
            "percentile of the gradient norms seen so far, AutoClip) or None."
        )
    return value


def _percentile(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 100:
        raise InvalidInputError(
            f"Received: {name}={value!r}. Pass a percentile in "
            "(0, 100], e.g. 90 (the default)."
        )
    return float(value)


def check_actions(actions, name="actions"):
    """`GradWatch(actions=...)`: a dict of the other kinds' actions."""
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


def _named(value):
    """A value as `run.json` holds it: a name, or its repr (a callable)."""
    return value if isinstance(value, (str, type(None))) else repr(value)


_REQUIRED = dataclasses.MISSING


def setting(default, doc, check=None, record=False):
    """A field of `WatchSettings`.

    Args:
        default: The default (`_REQUIRED` for none).
        doc: Its entry in `GradWatch`'s `Args` (indented by 4 spaces).
        check: `check(value, name)` returning the value to keep, raising
            `InvalidInputError` for a bad one; None for no check.
        record: Whether `run.json`'s `settings` holds it.
    """
    metadata = {"doc": textwrap.dedent(doc).strip("\n"), "check": check, "record": record}
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True, eq=False)  # probe_data may be arrays
class WatchSettings:
    """`GradWatch`'s settings, checked when made (see `GradWatch`).

    Attributes:
        actions_by_kind: The action of every alert kind, resolved
            (`alerts.resolve_actions`) from `nonfinite`, `exploding`,
            `vanishing` and `actions`.

    Raises:
        InvalidInputError: Naming the argument, what was received and what
            to pass instead.
    """

    log_dir: object = setting(_REQUIRED, check=_folder, doc="""
        Run folder (created; an unwritable folder is an error at
        train begin, before any step).""")
    every: object = setting(None, check=_optional(_positive_integer), record=True, doc="""
        Measure at step 0 and every `every` steps, and at no other
        step. Default None: the schedule above.""")
    overhead: float = setting(0.03, check=positive, record=True, doc="""
        Share of the training's CPU time the callback may take
        (default 0.03), all its work counted; measuring and drawing
        keep a third of it even when the checks of every step take
        more (small models with steps of a few ms). One-off costs
        (tracing the measurement, once per model and probe shape) are
        not charged to it.""")
    probe_data: object = setting(None, doc="""
        `(x, y)`, `(x, y, sample_weight)` or `x` to measure
        on. Default: the first `PROBE_ROWS` (16) sequences of the first
        training batch, with their sample weights.""")
    loss: object = setting(None, record=True, doc="""
        Loss of the measurements; defaults to the model's training
        objective (compiled losses with their weights, `add_loss`
        terms, regularisation). A model without one is not measured:
        the warning and `measurement_error` in `summary.json` say why.""")
    loss_steps: str = setting("last", check=_loss_steps, record=True, doc="""
        `"last"` (default) or `"all"`, see `measure`.""")
    nonfinite: object = setting("stop", doc="""
        Action on NaN/Inf: `"stop"` (default), `"warn"`,
        `"raise"`, a callable taking the `Alert`, None (off), or
        `"rollback"` (see `exploding`).""")
    exploding: object = setting("warn", doc="""
        Action on exploding gradients (default `"warn"`), or
        `"clip"`: warn, and start adaptive clipping (see `clip`; it
        cannot bound the step of an adaptive optimizer such as Adam),
        or `"rollback"`: warn, go back to the last healthy weights and
        optimizer state, lower the learning rate 10x, and train on
        (the rescue from a learning rate too high, which clipping does
        not give with adaptive optimizers; see `docs/clipping.md`).
        Each rollback is in the alert's message and in `summary.json`
        (`rollbacks`). Opt-in: no other action changes training.""")
    vanishing: object = setting("warn", doc="""
        Action on vanishing gradients (default `"warn"`).""")
    actions: object = setting(None, check=check_actions, record=True, doc="""
        Dict of the actions of the other kinds, e.g.
        `{"truncation": None}` (default: each kind's default, `"warn"`
        for `"truncation"`).""")
    spike_factor: float = setting(10.0, check=_positive_float, record=True, doc="""
        A loss above `spike_factor` times the highest of its
        last 100 steps in the same `fit` call is a jump (exploding); a
        gradient norm above `spike_factor` times the 90th percentile of
        its last 100 values is a spike, exploding only when the loss
        then rises above its recent level or turns non-finite within 3
        steps (default 10).""")
    warmup: int = setting(5, check=_positive_integer, record=True, doc="""
        Number of values the histories need before `spike_factor`
        applies (default 5). Before that, from the second step on, a
        value above `spike_factor ** 2` times the largest so far is a
        jump: abrupt blow-ups are caught from the first steps.""")
    max_grad_norm: object = setting(None, check=_optional(positive), record=True, doc="""
        Optional hard ceiling on the global gradient norm.""")
    max_decay_rate: float = setting(1.05, check=_positive_float, record=True, doc="""
        A profile grows going back in time (exploding) when,
        over at least 8 lags, its per-step rate fitted from lag 1 (over
        all lags or the far quarter) exceeds this (default 1.05) and its
        far end is at least 10x its lowest value.""")
    vanishing_fraction: float = setting(1e-3, check=_positive_float, record=True, doc="""
        A profile whose far end holds less than this
        fraction of the gradient at lag 0 is vanishing (default 1e-3).
        The far end is the profile's last lag, or on `TruncatedBPTT`
        models the last lag within `backprop`.""")
    vanishing_patience: int = setting(3, check=_positive_integer, record=True, doc="""
        Vanishing is reported when it holds at this
        many consecutive measurements (default 3), not counting those of
        the first epoch or of the first 200 optimizer updates, and the
        loss has stalled (the validation loss, else the epoch-mean
        training loss, not 1 % below its best earlier epoch).""")
    threshold: float = setting(stats.DEFAULT_HORIZON_THRESHOLD, record=True, doc="""
        Relative threshold of the `horizon` statistic.""")
    tolerance: float = setting(stats.DEFAULT_BIAS_TOLERANCE, record=True, doc="""
        Tolerance of the `suggested_window` statistic (and of
        the span a `truncation` alert suggests).""")
    plots: object = setting("end", check=_plots, doc="""
        `"end"` (default): draw the PNG plots and `report.html` into
        `log_dir` at the end of a `fit` when the time budget allows (a
        drawing takes about half a second), when training stops early
        (an alert, an exception, Ctrl-C), and otherwise when the Python
        process exits. In an interactive session (Jupyter, IPython) the
        end of a `fit` also draws if the last drawing is a minute old.
        `"epoch"`: also at epoch ends, as the budget allows. None: never
        (the `gradwatch report RUN_DIR` command draws them from the
        records).""")
    tensorboard: bool = setting(False, check=_tensorboard, doc="""
        Also write TensorBoard event files into `log_dir`:
        the loss and gradient norms as scalars, each measured layer's
        decay rate and horizon, and the plots as images.""")
    clip: object = setting(None, check=_clip, record=True, doc="""
        `"auto"`: clip every update's gradients at `clip_percentile`
        of the global norms of the updates before it (AutoClip,
        Seetharaman et al. 2020), inside the compiled step, for plain
        models and each `TruncatedBPTT` window update. None (default):
        no clipping, unless `exploding="clip"` (warn, and clip from the
        first exploding alert on). Under a multi-replica strategy, the
        norms are those of the all-reduced gradient.""")
    clip_percentile: float = setting(DEFAULT_CLIP_PERCENTILE, check=_percentile, record=True,
                                     doc="""
        The percentile, in (0, 100]; default 90: a healthy
        run's updates above the 90th percentile of the norms before
        them, about one in ten, are clipped, a spike back to that level.""")

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check = field.metadata["check"]
            if check is not None:
                value = check(getattr(self, field.name), field.name)
                object.__setattr__(self, field.name, value)
        resolved = alerts.resolve_actions(
            {**(self.actions or {}), "nonfinite": self.nonfinite,
             "exploding": self.exploding, "vanishing": self.vanishing}
        )
        object.__setattr__(self, "actions_by_kind", resolved)

    def replace(self, **changes):
        """A copy with `changes`, checked again."""
        return dataclasses.replace(self, **changes)

    def recorded(self):
        """The settings `run.json` holds, in field order (callables as
        their repr; `actions` as the action of every kind)."""
        recorded = {}
        for field in dataclasses.fields(self):
            if not field.metadata["record"]:
                continue
            if field.name == "actions":
                recorded["actions"] = {
                    kind: _named(action) for kind, action in self.actions_by_kind.items()}
            elif field.name == "loss":
                recorded["loss"] = _named(self.loss)
            else:
                recorded[field.name] = getattr(self, field.name)
        return recorded


FIELDS = tuple(field.name for field in dataclasses.fields(WatchSettings))


def args_doc(indent="    "):
    """The `Args` section of `GradWatch`'s docstring, from the fields."""
    lines = [indent + "Args:"]
    for field in dataclasses.fields(WatchSettings):
        first, *rest = field.metadata["doc"].split("\n")
        lines.append(f"{indent * 2}{field.name}: {first}")
        lines.extend(f"{indent * 3}{line}" if line else "" for line in rest)
    return "\n".join(lines)


def record(settings, model_name, tbptt, fits, optimizer=None):
    """The contents of `run.json` for a `GradWatch` with `settings`
    (`optimizer`: its name and family, `_learning_rate.family`)."""
    return {
        "format": records.FORMAT_VERSION,
        "model": model_name,
        "tbptt": tbptt,
        "settings": settings.recorded(),
        "fits": fits,
        **({"optimizer": optimizer} if optimizer else {}),
    }
