"""Private: `GradWatch`'s arguments, checked, and as recorded in `run.json`."""

from keras_gradwatch.core import alerts
from keras_gradwatch.core import measurement
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.runs import records

PLOT_MODES = ("end", "epoch", None)


def check(
    *, log_dir, every, overhead, loss_steps, nonfinite, exploding, vanishing,
    spike_factor, warmup, max_grad_norm, max_decay_rate, vanishing_fraction,
    vanishing_patience, plots, tensorboard, clip=None, clip_percentile=90.0, actions=None,
):
    """Checks `GradWatch`'s arguments; returns the alert actions by kind.

    Raises:
        InvalidInputError: Naming the argument, what was received and what
            to pass instead.
    """
    if not isinstance(log_dir, (str, bytes)) and not hasattr(log_dir, "__fspath__"):
        raise InvalidInputError(
            f"Received: log_dir={log_dir!r}. Pass a folder path, e.g. "
            "GradWatch('runs/exp1')."
        )
    if every is not None:
        positive(every, "every", integer=True)
    positive(overhead, "overhead")
    positive(spike_factor, "spike_factor")
    positive(warmup, "warmup", integer=True)
    if max_grad_norm is not None:
        positive(max_grad_norm, "max_grad_norm")
    positive(max_decay_rate, "max_decay_rate")
    positive(vanishing_fraction, "vanishing_fraction")
    positive(vanishing_patience, "vanishing_patience", integer=True)
    if loss_steps not in measurement.LOSS_STEPS:
        raise InvalidInputError(f"Received: loss_steps={loss_steps!r}. Pass 'last' or 'all'.")
    if plots not in PLOT_MODES:
        raise InvalidInputError(
            f"Received: plots={plots!r}. Pass 'end' (plots and report at "
            "the end of training), 'epoch' (also at epoch ends) or None "
            "(none; `gradwatch report RUN_DIR` draws them later)."
        )
    if tensorboard:
        try:
            import tensorboard as _  # noqa: F401
        except ImportError as error:
            raise InvalidInputError(
                "Received: tensorboard=True, but the tensorboard package "
                "is not installed. Run `pip install tensorboard` (or "
                "`pip install keras-gradwatch[tensorboard]`), or leave "
                "tensorboard=False."
            ) from error
    if clip not in (None, "auto"):
        raise InvalidInputError(
            f"Received: clip={clip!r}. Pass clip='auto' (clip every update at a "
            "percentile of the gradient norms seen so far, AutoClip) or None."
        )
    if isinstance(clip_percentile, bool) or not isinstance(clip_percentile, (int, float)) \
            or not 0 < clip_percentile <= 100:
        raise InvalidInputError(
            f"Received: clip_percentile={clip_percentile!r}. Pass a percentile in "
            "(0, 100], e.g. 90 (the default)."
        )
    return alerts.resolve_actions(
        {**check_actions(actions), "nonfinite": nonfinite, "exploding": exploding,
         "vanishing": vanishing}
    )


# Kinds with an argument of their own in `GradWatch`'s signature.
OWN_ARGUMENTS = ("nonfinite", "exploding", "vanishing")


def check_actions(actions):
    """`GradWatch(actions=...)`: a dict of the other kinds' actions."""
    if actions is None:
        return {}
    if not isinstance(actions, dict):
        raise InvalidInputError(
            f"Received: actions={actions!r}. Pass a dict mapping alert kinds to "
            "actions, e.g. actions={'truncation': None}."
        )
    own = [kind for kind in actions if kind in OWN_ARGUMENTS]
    if own:
        raise InvalidInputError(
            f"Received: actions={actions!r}. {own[0]!r} has an argument of its own: "
            f"pass {own[0]}={actions[own[0]]!r} instead."
        )
    return dict(actions)


def positive(value, name, integer=False):
    """Raises `InvalidInputError` unless `value` is a positive number."""
    kind = int if integer else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or not value > 0:
        what = "a positive integer" if integer else "a positive number"
        raise InvalidInputError(f"Received: {name}={value!r}. Pass {what}.")


def record(watch, model_name, tbptt, actions, fits, optimizer=None):
    """The contents of `run.json` for a `GradWatch` (`optimizer`: its name
    and family, `_learning_rate.family`)."""
    loss = watch.loss
    return {
        "format": records.FORMAT_VERSION,
        "model": model_name,
        "tbptt": tbptt,
        "settings": {
            "every": watch.every,
            "overhead": watch.overhead,
            "loss": loss if isinstance(loss, (str, type(None))) else repr(loss),
            "loss_steps": watch.loss_steps,
            "actions": {
                kind: action if isinstance(action, (str, type(None))) else repr(action)
                for kind, action in actions.items()
            },
            "spike_factor": watch.spike_factor,
            "warmup": watch.warmup,
            "max_grad_norm": watch.max_grad_norm,
            "max_decay_rate": watch.max_decay_rate,
            "vanishing_fraction": watch.vanishing_fraction,
            "vanishing_patience": watch.vanishing_patience,
            "threshold": watch.threshold,
            "tolerance": watch.tolerance,
            "clip": watch.clip,
            "clip_percentile": watch.clip_percentile,
        },
        "fits": fits,
        **({"optimizer": optimizer} if optimizer else {}),
    }
