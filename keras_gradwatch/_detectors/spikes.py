"""Private: exploding verdicts from each step's loss and gradient norm.

A gradient norm that rises is not, alone, a blow-up: when an LSTM leaves a
plateau its norm rises tenfold and stays there while the loss falls (that
is learning). What makes a blow-up is its effect on the loss. So
`Spikes` gives an `exploding` verdict on:

- a loss jump: a step's loss above `spike_factor` times the highest loss of
  the last `HISTORY` steps of this `fit` (during the first `warmup` steps,
  above `spike_factor ** 2` times the highest so far: a jump by orders of
  magnitude). Batch losses are heavy-tailed once small, so the reference
  is the recent highest, not the median;
- a norm spike confirmed by the loss: a gradient norm above `spike_factor`
  times the 90th percentile of its last `HISTORY` values (warm-up: above
  `spike_factor ** 2` times the largest so far), followed within
  `CONFIRM_STEPS` steps by a loss above its recent level (above the highest
  loss of the `LEVEL_STEPS` steps before the spike and `RISE` times their
  median) or by a non-finite loss or norm. The loss of the spike's own
  step is not evidence: it was computed before the spike's update, and a
  hard batch raises both at once;
- a sustained rise (a blow-up that creeps up by less than `spike_factor`
  a step, without a norm spike): a loss above `spike_factor` times the
  median of the `LEVEL_STEPS` steps before and above the highest of the
  `HISTORY` steps before, reached by rising at each of the last
  `CLIMB_STEPS` steps, or held at two steps in a row (one such step out of
  the blue is what a rare hard batch of a well-fitted model also does);
- a gradient norm above the user's `max_grad_norm`.

A norm spike that the loss does not follow (the loss stays or falls) is no
alert. The histories start again with each `fit` (a curriculum's next
stage may train on other data).
"""

import dataclasses
import statistics

from keras_gradwatch._detectors import base

# Values each history keeps: the steps a jump is judged against.
HISTORY = 100
# Steps before a norm spike whose losses set the loss's recent level.
LEVEL_STEPS = 20
# Steps after a norm spike in which the loss confirms it: an update shows in
# the next step's loss, and momentum carries it into a few more.
CONFIRM_STEPS = 3
# A loss 10x its level that rose at each of this many steps is a blow-up
# creeping up (a hard batch comes out of the blue).
CLIMB_STEPS = 3
# A confirming loss is above every recent loss and this many times their
# median: a rise that batch-to-batch noise of a stable loss does not make.
RISE = 2.0


@dataclasses.dataclass(frozen=True)
class _Spike:
    step: int
    norm: float
    ratio: float
    base: float
    warm: bool
    count: int
    threshold: float
    level: object  # the losses' recent median, or None
    top: object  # ... and highest
    source: str  # "step" or "probe"


class Spikes(base.Detector):
    """Loss jumps, norm spikes the loss confirms, and a hard norm ceiling.

    Args:
        factor: `spike_factor`.
        warmup: Values a history needs before `factor` applies.
        max_grad_norm: Optional hard ceiling on the gradient norm.
    """

    kind = "exploding"
    moment = "step"
    needs = ()  # the loss and the norm, each when logged

    def __init__(self, factor=10.0, warmup=5, max_grad_norm=None):
        self.factor = factor
        self.warmup = warmup
        self.max_grad_norm = max_grad_norm
        self.begin_fit()

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.spike_factor, settings.warmup, settings.max_grad_norm)

    def begin_fit(self):
        self._losses = base.RollingWindow(HISTORY)
        self._norms = base.RollingWindow(HISTORY)
        self._spike = None
        self._rise = None  # (step, level, top) of a first step of a rise

    def check(self, evidence):
        step, norm, loss = evidence.step, evidence.grad_norm, evidence.loss
        spike, new = self._spike, None
        if spike is not None and step - spike.step > CONFIRM_STEPS:
            spike = self._spike = None
        found, confirmed = [], None
        if norm is not None and not base.finite(norm) and spike and step > spike.step:
            confirmed = self._confirmed(spike, step, norm, "gradient norm")
        if base.finite(norm):
            if self.max_grad_norm is not None and norm > self.max_grad_norm:
                found.append(self._ceiling(norm, step, _words(evidence.norm_source)[0]))
            new = self._norm_spike(step, norm, evidence.norm_source)
            self._norms.add(norm)
            if new is not None:
                self._spike = new
        if loss is not None:
            if not base.finite(loss):
                if spike and step > spike.step and confirmed is None:
                    confirmed = self._confirmed(spike, step, loss, "loss")
            else:
                jump = self._loss_jump(step, loss) or self._sustained(step, loss)
                if jump is not None:
                    if new is not None:  # both leapt at this step
                        jump = dataclasses.replace(
                            jump, message=jump.message + " " + _also(new),
                            evidence={**jump.evidence, "grad_norm": new.norm},
                        )
                    found.append(jump)
                elif spike and step > spike.step and spike.top is not None and loss > max(
                    spike.top, RISE * spike.level
                ):
                    confirmed = self._confirmed(spike, step, loss, "loss")
                self._losses.add(loss)
        if confirmed is not None:
            found.insert(0, confirmed)
        if found:
            self._spike = None  # the blow-up is reported: once
        return _merge(found) if found else None

    # The evidence ---------------------------------------------------------------

    def _norm_spike(self, step, norm, source):
        count = len(self._norms)
        if count >= self.warmup:
            base_value, warm, factor = self._norms.quantile(0.9), True, self.factor
        elif count:
            base_value, warm, factor = self._norms.max(), False, self.factor**2
        else:
            return None
        if not (base_value > 0 and norm > factor * base_value):
            return None
        recent = self._losses.values()[-LEVEL_STEPS:]
        level = statistics.median(recent) if recent else None
        return _Spike(
            step=step, norm=norm, ratio=norm / base_value, base=base_value, warm=warm,
            count=count, threshold=factor * base_value, level=level,
            top=max(recent) if recent else None, source=source,
        )

    def _loss_jump(self, step, loss):
        count = len(self._losses)
        if not count:
            return None
        top = self._losses.max()
        warm = count >= self.warmup
        factor = self.factor if warm else self.factor**2
        if not (top > 0 and loss > factor * top):
            return None
        if warm:
            against = f"{loss / top:.0f}x the highest of the last {count} steps ({top:.3g})"
        else:
            against = (
                f"{loss / top:.3g}x the largest of the first {count} steps ({top:.3g}): a "
                "jump by orders of magnitude at the start of training"
            )
        return base.Finding(
            "exploding", None, loss, factor * top, "loss",
            f"The loss jumped to {loss:.3g} at step {step}, {against}: a sign of an "
            "exploding gradient (or of a bad batch).",
            evidence={"loss": loss, "loss_reference": top, "factor": factor},
            advice="clip",
        )

    def _sustained(self, step, loss):
        """A loss `factor` x its recent median and above its recent highs,
        after a climb of `CLIMB_STEPS` steps, or at two steps in a row."""
        rise, self._rise = self._rise, None
        if len(self._losses) < max(self.warmup, CLIMB_STEPS):
            return None
        if rise is not None and rise[0] == step - 1 and loss > max(
            self.factor * rise[1], rise[2]
        ):
            first, level, top = rise
            how = f"at step {first} and step {step}, two steps in a row"
        else:
            values = self._losses.values()
            level = statistics.median(values[-LEVEL_STEPS:])
            top = max(values)
            if not (level > 0 and loss > max(self.factor * level, top)):
                return None
            climb = values[-CLIMB_STEPS:] + [loss]
            if not all(a < b for a, b in zip(climb, climb[1:])):
                self._rise = (step, level, top)
                return None
            first, how = step, f"at step {step}, after rising at each of {CLIMB_STEPS} steps"
        return base.Finding(
            "exploding", None, loss, self.factor * level, "loss",
            f"The loss rose to {loss:.3g}, above {self.factor:g}x the median of the "
            f"{LEVEL_STEPS} steps before ({level:.3g}) and above the highest of the last "
            f"{HISTORY} ({top:.3g}) {how}: a blow-up creeping up.",
            evidence={"loss": loss, "loss_level": level, "loss_top": top,
                      "first_step": first},
            advice="clip",
        )

    def _ceiling(self, norm, step, what):
        return base.Finding(
            "exploding", None, norm, self.max_grad_norm, "grad_norm",
            f"The {what} is {norm:.3g} at step {step}, above "
            f"max_grad_norm={self.max_grad_norm:g}.",
            evidence={"grad_norm": norm, "max_grad_norm": self.max_grad_norm},
            advice="clip",
        )

    def _confirmed(self, spike, step, value, followed):
        what, unit = _words(spike.source)
        if spike.warm:
            against = f"{spike.ratio:.0f}x the 90th percentile of the last {spike.count} {unit}"
        else:
            against = f"{spike.ratio:.3g}x the largest of the first {spike.count} {unit}"
        message = (
            f"The {what} jumped to {spike.norm:.3g} at step {spike.step}, {against} "
            f"({spike.base:.3g}), "
        )
        evidence = {"grad_norm": spike.norm, "spike_step": spike.step,
                    "norm_reference": spike.base, followed: value, "step": step}
        if base.finite(value):
            message += (
                f"and the loss then rose to {value:.3g} at step {step}, above the "
                f"highest ({spike.top:.3g}) and {RISE:g}x the median ({spike.level:.3g}) "
                f"of the {LEVEL_STEPS} steps before the jump: the large update made the "
                "loss worse, a sign of an exploding gradient."
            )
            evidence.update(loss_top=spike.top, loss_level=spike.level)
        else:
            message += (
                f"and the {followed} turned {value} at step {step}: the gradient "
                "exploded."
            )
        return base.Finding(
            "exploding", None, spike.norm, spike.threshold, "grad_norm", message,
            evidence=evidence, advice="clip",
        )


def _also(spike):
    what, unit = _words(spike.source)
    reference = "90th percentile" if spike.warm else "largest"
    return (
        f"The {what} jumped at the same step, to {spike.norm:.3g}: {spike.ratio:.3g}x "
        f"the {reference} of the last {spike.count} {unit} ({spike.base:.3g})."
    )


def _words(source):
    """`(what, unit)`: how messages name a norm and what its history counts."""
    if source == "step":
        return "gradient norm", "steps"
    return "gradient norm on the probe batch", "measurements"


def _merge(found):
    """One finding per step: the first one's signal, every sentence."""
    first = found[0]
    if len(found) == 1:
        return first
    evidence = {}
    for finding in found:
        evidence.update(finding.evidence)
    return dataclasses.replace(
        first, message=" ".join(f.message for f in found), evidence=evidence
    )
