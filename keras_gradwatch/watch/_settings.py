"""Private: `GradWatch`'s settings, one validated object.

Each setting is written once, as a field of `WatchSettings` or of one of
its groups (`groups.Measuring`, `groups.Alerting`, `groups.AutoClip`; see
`_fields.setting`): its default, its check, what `run.json` records of it
and its documentation. From the fields come the checks of
`GradWatch(...)`'s arguments (the objects check themselves when made), the
`Args` sections of the docstrings and the `settings` of `run.json`
(`record`), which stay flat: the groups' fields under their own names. A
test checks that `GradWatch`'s signature lists `WatchSettings`'s fields,
in order, with their defaults.

The former flat keywords (`GradWatch(spike_factor=20)`) still work,
deprecated: `from_flat` puts them into their groups.
"""

import dataclasses
import reprlib

from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.runs import records
from keras_gradwatch.watch import _autoclip
from keras_gradwatch.watch import _fields
from keras_gradwatch.watch import groups
from keras_gradwatch.watch._fields import setting

PLOT_MODES = ("end", "epoch", None)
DEFAULT_CLIP_PERCENTILE = _autoclip.DEFAULT_PERCENTILE


def _folder(value, name):
    if not isinstance(value, (str, bytes)) and not hasattr(value, "__fspath__"):
        raise InvalidInputError(
            f"Received: {name}={value!r}. Pass a folder path, e.g. "
            "GradWatch('runs/exp1')."
        )
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
    """`clip`: None, or an `AutoClip` (`"auto"` is `AutoClip()`)."""
    if isinstance(value, groups.AutoClip) or value is None:
        return value
    if isinstance(value, str) and value == "auto":
        return groups.AutoClip()
    raise InvalidInputError(
        f"Received: {name}={value!r}. Pass clip='auto' (clip every update at a "
        "percentile of the gradient norms seen so far, AutoClip), "
        "clip=AutoClip(percentile=...) for another percentile, or None."
    )


def _clip_record(settings):
    return {"clip": "auto" if settings.clip is not None else None,
            "clip_percentile": settings.clip_percentile}


def _group_record(name):
    return lambda settings: getattr(settings, name).recorded()


@dataclasses.dataclass(frozen=True)
class WatchSettings:
    """`GradWatch`'s settings, checked when made (see `GradWatch`).

    `measuring` and `alerting` are always groups (None is the defaults);
    `clip` is None or an `AutoClip`.

    Raises:
        InvalidInputError: Naming the argument, what was received and what
            to pass instead.
    """

    log_dir: object = setting(_fields.REQUIRED, check=_folder, doc="""
        Run folder (created; an unwritable folder is an error at
        train begin, before any step).""")
    every: object = setting(None, check=_fields.optional(_fields.positive_integer),
                            record=True, doc="""
        Measure at step 0 and every `every` steps, and at no other
        step. Default None: the schedule above.""")
    overhead: float = setting(0.03, check=_fields.positive, record=True, doc="""
        Share of the training's CPU time the callback may take
        (default 0.03), all its work counted; measuring and drawing
        keep a third of it even when the checks of every step take
        more (small models with steps of a few ms). One-off costs
        (tracing the measurement, once per model and probe shape) are
        not charged to it.""")
    measuring: object = setting(
        None, check=_fields.group(groups.Measuring, "Measuring(probe_data=(x, y))"),
        record=_group_record("measuring"), doc="""
        A `keras_gradwatch.Measuring`: what the measurements use
        (`probe_data`, `loss`, `loss_steps`, `threshold`, `tolerance`).
        Default None: its defaults.""")
    alerting: object = setting(
        None, check=_fields.group(groups.Alerting, "Alerting(spike_factor=20)"),
        record=_group_record("alerting"), doc="""
        A `keras_gradwatch.Alerting`: the detectors and the action on
        each alert kind (`nonfinite`, `exploding`, `vanishing`,
        `actions`, `spike_factor`, `warmup`, `max_grad_norm`,
        `max_decay_rate`, `vanishing_fraction`, `vanishing_patience`).
        Default None: its defaults.""")
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
    clip: object = setting(None, check=_clip, record=_clip_record, doc="""
        `"auto"` or a `keras_gradwatch.AutoClip`: clip every update's
        gradients at a percentile (default 90) of the global norms of
        the updates before it (AutoClip, Seetharaman et al. 2020),
        inside the compiled step, for plain models and each
        `TruncatedBPTT` window update; `clip=AutoClip(percentile=10)`
        for another percentile. None (default): no clipping, unless
        `Alerting(exploding="clip")` (warn, and clip from the first
        exploding alert on). Under a multi-replica strategy, the norms
        are those of the all-reduced gradient.""")

    def __post_init__(self):
        _fields.check_fields(self)
        action = self.alerting.clip_action
        if self.clip is not None and action is not None and self.clip != action:
            raise InvalidInputError(
                f"Received: clip={self.clip!r} and "
                f"alerting=Alerting(exploding={action!r}): one AutoClip clips. "
                "Pass the same percentile to both, or exploding='clip' (it "
                "then clips at clip's percentile)."
            )

    @property
    def actions_by_kind(self):
        """The action of every alert kind (see `Alerting`)."""
        return self.alerting.actions_by_kind

    @property
    def clip_percentile(self):
        """The percentile AutoClip clips at, from `clip` or the `exploding`
        action (default 90)."""
        clipper = self.clip or self.alerting.clip_action or groups.AutoClip()
        return clipper.percentile

    @property
    def clips_on_alert(self):
        """Whether the `exploding` action starts AutoClip."""
        return self.actions_by_kind["exploding"] == "clip"

    def replace(self, **changes):
        """A copy with `changes`, checked again."""
        return dataclasses.replace(self, **changes)

    def recorded(self):
        """The settings `run.json` holds: flat, in field order (the
        groups' fields under their own names; callables as their repr;
        `actions` as the action of every kind)."""
        return _fields.recorded(self)

    def flat(self):
        """The settings under the former flat keywords of `GradWatch`
        (`log_dir`, `every`, ..., `spike_factor`, ..., `clip` as `"auto"`
        or None, `clip_percentile`), in order, as its attributes."""
        values = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name in GROUPS:
                values.update((f.name, getattr(value, f.name))
                              for f in dataclasses.fields(value))
            elif field.name == "clip":
                values.update(_clip_record(self))
            else:
                values[field.name] = value
        if self.alerting.clip_action is not None:
            values["exploding"] = "clip"
        return values


FIELDS = tuple(field.name for field in dataclasses.fields(WatchSettings))

# The keyword of each group, and the group's class.
GROUPS = {"measuring": groups.Measuring, "alerting": groups.Alerting}

# The former flat keywords: each group's fields, and `clip_percentile`.
FLAT = {f.name: keyword for keyword, cls in GROUPS.items()
        for f in dataclasses.fields(cls)}
FLAT["clip_percentile"] = "clip"


def args_doc(indent="    "):
    """The `Args` section of `GradWatch`'s docstring, from the fields."""
    return _fields.args_doc(WatchSettings, indent)


def _short(value):
    """`repr(value)`, shortened; `...` for one of several lines (a probe
    batch's arrays)."""
    short = reprlib.Repr()
    short.maxstring = short.maxother = 60
    text = short.repr(value)
    return "..." if "\n" in text else text


def from_flat(arguments, flat):
    """`WatchSettings` from `GradWatch`'s keywords `arguments` and the
    former flat keywords `flat` (deprecated), each put into its group.

    Returns:
        The settings, and one deprecation message per flat keyword, naming
        the grouped form to pass instead.

    Raises:
        TypeError: A keyword `GradWatch` never took.
        InvalidInputError: A flat keyword passed with its group, naming
            both.
    """
    unknown = [name for name in flat if name not in FLAT]
    if unknown:
        raise TypeError(f"GradWatch() got an unexpected keyword argument {unknown[0]!r}")
    arguments = dict(arguments)
    for name in flat:
        keyword = FLAT[name]
        given = arguments[keyword]
        if given is not None and (keyword in GROUPS or isinstance(given, groups.AutoClip)):
            raise InvalidInputError(
                f"Received: {name}={_short(flat[name])} and {keyword}="
                f"{_short(arguments[keyword])}. Pass {name} inside {keyword} only, "
                f"e.g. {keyword}={_grouped(name, flat[name])}."
            )
    messages = [f"GradWatch({name}={_short(flat[name])}) is deprecated: pass "
                f"{FLAT[name]}={_grouped(name, flat[name])}." for name in flat
                if name != "clip_percentile"]
    for keyword, cls in GROUPS.items():
        fields = {name: value for name, value in flat.items() if FLAT[name] == keyword}
        if fields:
            arguments[keyword] = cls(**fields)
    if "clip_percentile" in flat:
        messages.append(_move_percentile(arguments, flat["clip_percentile"]))
    return WatchSettings(**arguments), messages


def _grouped(name, value):
    cls = GROUPS[FLAT[name]].__name__ if name in FLAT and FLAT[name] in GROUPS else None
    if cls is None:  # clip_percentile
        return f"AutoClip(percentile={_short(value)})"
    return f"{cls}({name}={_short(value)})"


def _move_percentile(arguments, percentile):
    """The former `clip_percentile` goes to the `AutoClip` it tunes: that of
    `clip="auto"`, else that of `exploding="clip"`. Returns the message."""
    clipper = groups.AutoClip(percentile=groups._percentile(percentile, "clip_percentile"))
    old = f"GradWatch(clip_percentile={_short(percentile)}) is deprecated: pass "
    if _clip(arguments["clip"], "clip") is not None:
        arguments["clip"] = clipper
        return old + f"clip=AutoClip(percentile={percentile!r})."
    alerting = arguments["alerting"] or groups.Alerting()
    if alerting.actions_by_kind["exploding"] == "clip":
        arguments["alerting"] = dataclasses.replace(alerting, exploding=clipper)
        return old + f"alerting=Alerting(exploding=AutoClip(percentile={percentile!r}))."
    return old + (f"clip=AutoClip(percentile={percentile!r}) to clip (without "
                  "clipping it had no effect, and has none).")


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
