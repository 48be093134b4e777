"""Private: the advice of exploding and non-finite alerts, fit to the optimizer.

Pure: it takes what is known about the optimizer and the learning rate and
returns the sentence; `_alerting.AlertDesk` supplies the facts.

What bounds the step depends on the optimizer:

- SGD (with or without momentum) moves the weights by the learning rate
  times the gradient: `global_clipnorm=c` bounds an update by `lr * c`
  (`lr * c / (1 - momentum)` with momentum), so clipping bounds the step;
- adaptive optimizers (Adam, AdamW, Adamax, Nadam, RMSprop, Adagrad,
  Adadelta, Adafactor, Ftrl, Lamb, Lion, Muon) divide the gradient by its
  own running scale (or take its sign): an update is about the learning
  rate per weight whatever the gradient's norm (Adam's is at most about
  `lr * (1 - beta_1) / sqrt(1 - beta_2)`, 3.2 x `lr` at the defaults), and
  scaling every gradient down leaves it unchanged. Clipping the gradient
  norm does not bound their step: the learning rate does.

When the learning rate rose before the blow-up (`_lr_history.Rise`), that
is the first suggestion, whatever the optimizer.
"""

from keras_gradwatch.core import alerts

ADAPTIVE = "adaptive"
SGD = "sgd"
UNKNOWN = "unknown"
FAMILIES = (ADAPTIVE, SGD, UNKNOWN)
# The learning rate advice suggests: a tenth (one order of magnitude).
LOWER = 0.1


def advice(family, optimizer, rise=None, clipnorm=None, rate=None):
    """The advice sentence of an exploding or non-finite alert.

    Args:
        family: `ADAPTIVE`, `SGD` or `UNKNOWN` (`_learning_rate.family`).
        optimizer: The optimizer's class as code, e.g.
            `"keras.optimizers.Adam"`.
        rise: The learning rate's rise before the blow-up
            (`_lr_history.Rise`), or None.
        clipnorm: A suggested `global_clipnorm` (`alerts.clip_suggestion`),
            or None.
        rate: The current learning rate, or None when unknown.

    Returns:
        One or more sentences, starting with the first suggestion.

    Example:

    >>> from keras_gradwatch.watch._lr_history import Rise
    >>> advice("adaptive", "keras.optimizers.Adam", Rise(1000.0, 0.001, 1.0, 26, 27))[:72]
    'The learning rate rose 1000x at step 27, from 0.001 to 1: lower it back '
    >>> advice("sgd", "keras.optimizers.SGD", clipnorm=0.5)[:60]
    'Clip gradients around the typical norm (Pascanu et al. 2013)'
    """
    if family not in FAMILIES:
        raise ValueError(f"Received: family={family!r}. Pass one of {FAMILIES}.")
    why = _why_not_clip(optimizer) if family == ADAPTIVE else ""
    if rise is not None:
        first = (f"{_capital(rise.sentence())}: lower it back (or warm up to it over "
                 "more steps).")
        if family == ADAPTIVE:
            return f"{first} {why}"
        return f"{first} Or " + alerts.clip_advice(clipnorm, lead="clip", optimizer=optimizer)
    if family == ADAPTIVE:
        return f"Lower the learning rate{_lower_example(rate)}, or warm it up from a lower value. {why}"
    clip = alerts.clip_advice(clipnorm, optimizer=optimizer)
    if family == SGD:
        return f"{clip} Or lower the learning rate{_lower_example(rate)}."
    return (f"Lower the learning rate{_lower_example(rate)}, or "
            + alerts.clip_advice(clipnorm, lead="clip", optimizer=optimizer)
            + " (Clipping bounds the step of SGD; with an adaptive optimizer such as "
            "Adam the learning rate does.)")


def clip_note(family, optimizer):
    """What clipping can do with this optimizer, for the settings and a
    warning when it is asked for: a sentence, or None when it bounds the step.

    Example:

    >>> clip_note("sgd", "keras.optimizers.SGD") is None
    True
    >>> clip_note("adaptive", "keras.optimizers.Adam")[:62]
    'Clipping cannot bound the step of keras.optimizers.Adam: it is'
    """
    if family != ADAPTIVE:
        return None
    return (
        f"Clipping cannot bound the step of {optimizer}: it is an adaptive "
        "optimizer, whose step size is set by the learning rate, not by the "
        "gradient's norm. Clipping damps a single outlier gradient, no more. "
        "Against a blow-up from too large a step (a learning rate raised or too "
        "high), lower the learning rate, or pass exploding='rollback' (back to "
        "the last healthy weights, at a tenth of the learning rate)."
    )


def _why_not_clip(optimizer):
    return (f"With {optimizer} (adaptive) the step size is set by the learning rate: "
            "clipping the gradient norm does not bound it.")


def _lower_example(rate):
    if rate is None:
        return ""
    return f" (e.g. to {rate * LOWER:.2g}, a tenth of the current {rate:.3g})"


def _capital(text):
    return text[:1].upper() + text[1:]
