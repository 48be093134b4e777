"""Private: does a measurement show the gradient that training follows?

A measurement differentiates the model's training objective on the probe
batch, with the weights of the step it follows. Its global gradient norm
is then of the order of the `grad_norm` the training steps log: the same
objective, the same weights, another sample of the data. When the two are
orders of magnitude apart, the measurement differentiates something else
(a loss other than the one `fit` minimises, or a model that trains
differently from how it runs when measured), and its profiles say nothing
about training: `GradWatch` marks such a measurement `suspect` instead of
reporting it, once it is off at two measurements in a row (one can be a
blow-up: see `suspect_reason`).

How far apart is too far (`SUSPECT_FACTOR`, 100). What separates the two
norms in a healthy run:

- sampling: the probe batch holds 16 sequences, training batches 32 to
  256. The norm of a batch-mean gradient lies between that of the true
  gradient and (when per-sample noise dominates) one that shrinks as
  1/sqrt(batch): at most sqrt(256 / 16) = 4x from batch size alone, and
  the probe's 16 sequences are one draw (a few times more either way);
- the mode: the measurement runs the model in inference mode (no dropout),
  training in training mode: a factor below 2 for usual dropout rates;
- time: the references are the median over the last `RECENT_STEPS` steps
  (a spike or a dip of one step does not move it) and the latest step's
  norm (taken on the weights the measurement sees, so that a blow-up or
  the exit from a plateau, where the norm leaves its median, is followed
  at once); the measurement is suspect only when far from both;
- `TruncatedBPTT`: its `grad_norm` is the largest window update's, the
  measurement is of the mean loss over the whole sequence: up to
  sqrt(windows) apart for uncorrelated windows (10x at 100 windows).

Together a factor of about 10 to 40 in the worst healthy cases: 100 leaves
room for them. A measurement of the wrong objective is off by far more
(the sum of a softmax's outputs against a CTC loss: 1e-6 against 80, a
factor of 1e7).
"""

import collections
import math

SUSPECT_FACTOR = 100.0
RECENT_STEPS = 16


def mismatch(global_norm, step_norms, factor=SUSPECT_FACTOR):
    """How a measurement's norm lies against the training steps' norms.

    The measured norm is compared with two references: the median of the
    steps' norms (one odd step does not move it) and the latest step's
    norm (a norm that leaves its median, at the exit from a plateau, shows
    there first). It is off when more than `factor` away from both.

    Args:
        global_norm: The measurement's global gradient norm, or None.
        step_norms: The `grad_norm` of the training steps just before the
            measurement, oldest first (None or non-finite entries are
            ignored).
        factor: How many times apart the norms may be (default 100, see
            the module's docstring).

    Returns:
        None when there is nothing to compare (no measured norm, no finite
        step norm, a zero reference, or a measured norm that is not finite:
        the non-finite checks report that). Else `(direction, words)`:
        `direction` is None (within `factor`), `"above"` or `"below"`, and
        `words` says where the measured norm lies against the references.
    """
    if global_norm is None or not math.isfinite(global_norm):
        return None
    finite = [v for v in map(_number, step_norms) if v is not None and v >= 0]
    if not finite:
        return None
    median, latest = _median(sorted(finite)), finite[-1]
    low, high = min(median, latest), max(median, latest)
    if low == 0:
        return None
    if global_norm > high * factor:
        direction, apart = "above", f"{global_norm / high:.3g}x above"
    elif global_norm * factor < low:
        direction = "below"
        apart = f"{low / global_norm:.3g}x below" if global_norm > 0 else "zero, against"
    else:
        return None, ""
    return direction, (
        f"its gradient norm on the probe batch, {global_norm:.3g}, is {apart} "
        f"the grad_norm of the training steps (median {median:.3g} over the "
        f"last {len(finite)}, latest {latest:.3g})"
    )


def suspect_reason(global_norm, step_norms, previous=None, factor=SUSPECT_FACTOR):
    """Why a measurement's gradient cannot be the one training follows.

    One measurement off by more than `factor` can be an event of training:
    the measurement sees the weights after the step's update, the step's
    norm those before it, so an update that blows the weights up (or
    drives them into saturation) shows first at the measurement. A
    measurement of another objective is off at every measurement. So a
    measurement is suspect when it is off and the measurement before it
    (that had steps to compare with) was off the same way.

    Args:
        global_norm: The measurement's global gradient norm, or None.
        step_norms: The `grad_norm` of the training steps just before the
            measurement, oldest first.
        previous: The direction (`mismatch`) of the measurement before:
            None, `"above"` or `"below"`.
        factor: How many times apart the norms may be (default 100).

    Returns:
        None, or a sentence that states the norms and the factor.
    """
    found = mismatch(global_norm, step_norms, factor)
    if found is None or found[0] is None or found[0] != previous:
        return None
    return (
        f"{found[1]}, as at the measurement before: more than {factor:g}x apart "
        "twice in a row, it is not the gradient training follows (a loss other "
        "than the training objective, or a model that trains differently from "
        "how it is measured)"
    )


def measured_nothing(profiles, empty_inputs):
    """Why a measurement measured nothing, or None.

    A probe batch whose sequences are all fully masked (every input zero,
    as `Masking(0.0)` and `Embedding(mask_zero=True)` mask) gives no
    gradient through time: every profile is exactly zero, and its
    statistics (decay 0, horizon 0, a suggested window of 1) describe the
    batch, not the network. Both must hold: profiles at zero on inputs
    that carry something are a finding about the network (a dead
    recurrence), which the alerts must see.

    Args:
        profiles: Dict of layer name -> profile (sequence of numbers).
        empty_inputs: Whether every input value of the probe batch is 0.

    Returns:
        None, or a sentence saying what was measured.

    Example:

    >>> measured_nothing({"lstm": [0.0, 0.0]}, empty_inputs=True) is not None
    True
    >>> measured_nothing({"lstm": [0.0, 0.0]}, empty_inputs=False) is None
    True
    >>> measured_nothing({"lstm": [0.0, 0.1], "gru": [0.0]}, empty_inputs=True) is None
    True
    """
    if not profiles or not empty_inputs:
        return None
    for profile in profiles.values():
        values = [float(v) for v in profile]
        if not values or any(v != 0.0 for v in values):
            return None
    return (
        "the probe batch gives no gradient through time at any measured layer "
        f"(every profile is exactly 0 over {max(len(p) for p in profiles.values())} "
        "lags) and its inputs are all zero: its sequences are fully masked or "
        "empty, so this measurement measured nothing"
    )


class Sanity:
    """Judges a run's measurements against its training steps' norms.

    Args:
        factor: See `suspect_reason`.
        size: How many recent steps' norms to keep (`RECENT_STEPS`).
    """

    def __init__(self, factor=SUSPECT_FACTOR, size=RECENT_STEPS):
        self.factor = factor
        self.norms = RecentNorms(size)
        self._previous = None

    def new_fit(self):
        """A `fit` begins (perhaps on other data, or another model)."""
        self.norms.clear()
        self._previous = None

    def add_step(self, grad_norm):
        """Keeps a step's `grad_norm` (None when the step logged none)."""
        self.norms.add(grad_norm)

    def judge(self, global_norm):
        """`suspect_reason` of a measurement; remembers how it lay."""
        reason = suspect_reason(global_norm, self.norms.values, self._previous, self.factor)
        found = mismatch(global_norm, self.norms.values, self.factor)
        if found is not None:
            self._previous = found[0]
        return reason


class RecentNorms:
    """The `grad_norm` logged by the last `size` training steps.

    Args:
        size: How many steps to keep (default `RECENT_STEPS`).
    """

    def __init__(self, size=RECENT_STEPS):
        self._values = collections.deque(maxlen=size)

    def add(self, value):
        """Keeps a step's `grad_norm` (None when the step logged none)."""
        value = _number(value)
        if value is not None:
            self._values.append(value)

    def clear(self):
        self._values.clear()

    @property
    def values(self):
        return list(self._values)


def _number(value):
    """`value` as a finite float, or None."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _median(ordered):
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return (ordered[middle - 1] + ordered[middle]) / 2
