"""Private: exploding verdicts from each step's loss and gradient norm.

A blow-up is a change of the model: an update so large that the weights
land where the loss is high and the gradients steep. The loss and gradient
of step s are computed on batch s with the weights after update s - 1, so a
step's own numbers cannot tell that change from a hard batch (a rare
example, an outlier target), which raises both at once and leaves the
model as it was: a well-fitted classifier's batch losses jump 10-75x their
median with nothing wrong, and a regression with one outlier target gets a
loss 190x its median once an epoch. What tells them apart is what comes
after, on other batches, or a cause in view. So `Spikes` gives an
`exploding` verdict on:

- a loss jump that what follows confirms. A jump is a step's loss above
  `spike_factor` times the highest loss of the last `HISTORY` steps of this
  `fit`, or above `spike_factor` times the median of the `LEVEL_STEPS`
  before it and above that highest (during the first `warmup` steps: above
  `spike_factor ** 2` times the highest so far). The model did not come
  back when every loss of the `CONFIRM_STEPS` steps after the jump stays
  above the 90th percentile of the losses before it (each is in a healthy
  run with chance 1 in 10: all three, 1 in 1,000), or when one of them
  jumps again (`spike_factor` times the highest before the first jump), or
  its gradient norm spikes (as below), or a loss or norm turns non-finite.
  A loss back below that percentile ends the wait: a hard batch leaves the
  next steps as they were. It is a verdict at once when its cause is in
  view: the learning rate of the update before it rose to
  `spike_factor` times its recent median, or the loss climbed to it, each of
  the `CLIMB_STEPS` steps before it higher than the last and at least
  `RISE` times the median (a blow-up creeping up);
- a norm spike confirmed by the loss: a gradient norm above `spike_factor`
  times the 90th percentile of its last `HISTORY` values (warm-up: above
  `spike_factor ** 2` times the largest so far), followed within
  `CONFIRM_STEPS` steps by a loss above the highest and `RISE` times the
  median of the `LEVEL_STEPS` losses before the spike, or by a non-finite
  loss or norm. The loss of the spike's own step is not
  evidence, as above;
- a gradient norm above the user's `max_grad_norm`.

A jump or spike the next steps do not confirm is no alert: when an LSTM
leaves a plateau its norm rises tenfold and stays there while the loss
falls (that is learning). The histories start again with each `fit` (a
curriculum's next stage may train on other data).
"""

import dataclasses
import statistics

from keras_gradwatch.core._detectors import base

# Values each history keeps: the steps a jump is judged against.
HISTORY = 100
# Steps before a jump or spike whose losses set the loss's recent level.
LEVEL_STEPS = 20
# Steps after a jump or norm spike in which what follows confirms it: an
# update shows in the next step's loss, and momentum carries it into a few
# more.
CONFIRM_STEPS = 3
# Steps of a climb that makes a jump a verdict at once.
CLIMB_STEPS = 3
# A confirming value is above every recent one and this many times their
# median: a rise that batch-to-batch noise of a stable run does not make.
RISE = 2.0


@dataclasses.dataclass(frozen=True)
class _Level:
    """A history's median and highest before a jump or spike (None if empty)."""

    median: object
    top: object

    @classmethod
    def of(cls, values):
        if not values:
            return cls(None, None)
        return cls(statistics.median(values), max(values))

    def exceeded_by(self, value):
        return self.top is not None and value > max(self.top, RISE * self.median)


@dataclasses.dataclass(frozen=True)
class _Spike:
    """A gradient norm far above its history, waiting for the loss."""

    step: int
    norm: float
    ratio: float
    base: float
    warm: bool
    count: int
    threshold: float
    losses: _Level  # the LEVEL_STEPS losses before it
    source: str  # "step" or "probe"


@dataclasses.dataclass(frozen=True)
class _Jump:
    """A step's loss far above its history, waiting for what follows."""

    step: int
    loss: float
    threshold: float
    against: str  # what it was compared with, in words
    losses: _Level  # the LEVEL_STEPS losses before it (top: of HISTORY)
    usual: float  # the 90th percentile of the losses before it
    also: str = ""  # the norm spike of the same step, in words


class Spikes(base.Detector):
    """Loss jumps and norm spikes that what follows confirms, and a ceiling.

    Args:
        factor: `spike_factor`.
        warmup: Values a history needs before `factor` applies.
        max_grad_norm: Optional hard ceiling on the gradient norm.
    """

    kind = "exploding"
    moment = "step"
    needs = ()  # the loss, the norm and the learning rate, each when logged

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
        self._rates = base.RollingWindow(HISTORY)
        self._spike = None
        self._jump = None
        self._checks_after = {"spike": 0, "jump": 0}  # checks since each was seen

    @property
    def suspect(self):
        """Whether a jump or spike waits for confirmation (the model may be
        damaged: no snapshot of it is a healthy one)."""
        return self._jump is not None or self._spike is not None

    def check(self, evidence):
        step, norm, loss = evidence.step, evidence.grad_norm, evidence.loss
        self._expire(step)
        self._came_back(step, loss)
        found = []
        if self.max_grad_norm is not None and base.finite(norm) and norm > self.max_grad_norm:
            found.append(self._ceiling(norm, step, _words(evidence.norm_source)[0]))
        new_spike = self._norm_spike(step, norm, evidence.norm_source) if base.finite(norm) else None
        confirmed = self._confirmation(step, loss, norm, new_spike)
        if confirmed is None and base.finite(loss):
            jump = self._loss_jump(step, loss)
            if jump is not None:
                confirmed = self._at_once(jump, new_spike)
                if confirmed is None:
                    # One candidate per step: a hard batch leaps in loss and
                    # norm at once, and the jump's stricter rule judges both.
                    self._jump = jump if new_spike is None else dataclasses.replace(
                        jump, also=_also(new_spike))
                    self._checks_after["jump"], new_spike = 0, None
        if confirmed is not None:
            found.insert(0, confirmed)
        elif new_spike is not None:
            self._spike = new_spike
            self._checks_after["spike"] = 0
        self._losses.add(loss)
        self._norms.add(norm)
        self._rates.add(evidence.lr)
        if found:
            self._spike = self._jump = None  # the blow-up is reported: once
        return _merge(found) if found else None

    # The candidates --------------------------------------------------------------

    def _expire(self, step):
        """Counts the checks after each waiting candidate, and drops one
        after `CONFIRM_STEPS` of them. Checks, not steps: with
        `steps_per_execution=k` Keras logs every k steps (each loss then the
        mean of k steps)."""
        for name in ("spike", "jump"):
            candidate = getattr(self, f"_{name}")
            if candidate is not None and step > candidate.step:
                self._checks_after[name] += 1
                if self._checks_after[name] > CONFIRM_STEPS:
                    setattr(self, f"_{name}", None)

    def _came_back(self, step, loss):
        """Drops a waiting jump once a loss after it is back among the usual
        ones (below their 90th percentile): the model is as it was."""
        jump = self._jump
        if jump is not None and step > jump.step and base.finite(loss) and loss <= jump.usual:
            self._jump = None

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
        return _Spike(
            step=step, norm=norm, ratio=norm / base_value, base=base_value, warm=warm,
            count=count, threshold=factor * base_value,
            losses=_Level.of(self._losses.values()[-LEVEL_STEPS:]), source=source,
        )

    def _loss_jump(self, step, loss):
        """A `_Jump` if `loss` leaps above its history, else None."""
        values = self._losses.values()
        if not values:
            return None
        top, count = max(values), len(values)
        level = statistics.median(values[-LEVEL_STEPS:])
        if count < self.warmup:
            if not (top > 0 and loss > self.factor**2 * top):
                return None
            threshold = self.factor**2 * top
            against = (f"{loss / top:.3g}x the largest of the first {count} steps ({top:.3g}): "
                       "a jump by orders of magnitude at the start of training")
        elif top > 0 and loss > self.factor * top:
            threshold = self.factor * top
            against = f"{loss / top:.0f}x the highest of the last {count} steps ({top:.3g})"
        elif level > 0 and loss > max(self.factor * level, top):
            threshold = self.factor * level
            against = (f"{loss / level:.0f}x the median of the {min(count, LEVEL_STEPS)} steps "
                       f"before ({level:.3g}) and above the highest of the last {count} "
                       f"({top:.3g})")
        else:
            return None
        return _Jump(step, loss, threshold, against, _Level(level, top),
                     self._losses.quantile(0.9))

    # The verdicts ----------------------------------------------------------------

    def _at_once(self, jump, spike):
        """A finding for `jump` if its cause is in view, else None."""
        rate = self._rate_rise()
        climb = self._losses.values()[-CLIMB_STEPS:]
        rising = (len(climb) == CLIMB_STEPS and jump.losses.median > 0
                  and all(a < b for a, b in zip(climb, climb[1:] + [jump.loss]))
                  and min(climb) >= RISE * jump.losses.median)
        if rate is not None:
            before, after = rate
            why = (f"right after the learning rate rose {after / before:.3g}x (from "
                   f"{before:.3g} to {after:.3g}): steps that large blow the update up")
        elif rising:
            why = (f"after rising at each of the {CLIMB_STEPS} steps before it ("
                   + ", ".join(f"{v:.3g}" for v in climb)
                   + f", each at least {RISE:g}x that median): a blow-up creeping up")
        else:
            return None
        message = (f"The loss jumped to {jump.loss:.3g} at step {jump.step}, {jump.against}, "
                   f"{why}.")
        if spike is not None:
            message += " " + _also(spike)
        return self._jump_finding(jump, message, {"cause": "learning_rate" if rate else "climb"})

    def _rate_rise(self):
        """`(before, after)` if the last update's learning rate is `factor` x
        the median of the ones before it, else None."""
        rates = self._rates.values()
        if len(rates) < 2:
            return None
        before = statistics.median(rates[:-1])
        after = rates[-1]
        return (before, after) if before > 0 and after >= self.factor * before else None

    def _confirmation(self, step, loss, norm, spike):
        """A finding if this step confirms a waiting jump or spike, else None
        (`spike`: this step's norm spike, or None)."""
        for candidate in (self._jump, self._spike):
            if candidate is None or step <= candidate.step:
                continue
            for value, what in ((loss, "loss"), (norm, "gradient norm")):
                if value is not None and not base.finite(value):
                    return self._confirmed(candidate, step, f"the {what} turned {value} at "
                                           f"step {step}: the gradient exploded.",
                                           {what.replace("gradient norm", "grad_norm"): value})
            after = (self._jump_held(candidate, step, loss, norm, spike)
                     if isinstance(candidate, _Jump)
                     else self._loss_rose(candidate, step, loss))
            if after is not None:
                return self._confirmed(candidate, step, after[0], {**after[1], "step": step})
        return None

    def _loss_rose(self, spike, step, loss):
        """`(sentence, evidence)` if `loss` rose above its level before `spike`."""
        if not (base.finite(loss) and spike.losses.exceeded_by(loss)):
            return None
        return (f"the loss then rose to {loss:.3g} at step {step}, above the highest "
                f"({spike.losses.top:.3g}) and {RISE:g}x the median ({spike.losses.median:.3g}) "
                f"of the {LEVEL_STEPS} steps before the jump: the large update made the loss "
                "worse, a sign of an exploding gradient."), {"loss": loss}

    def _jump_held(self, jump, step, loss, norm, spike):
        """`(sentence, evidence)` if what follows `jump` shows the model did
        not come back: a second jump, a norm spike, or every loss since
        above the usual ones for `CONFIRM_STEPS` steps."""
        if base.finite(loss) and loss > self.factor * jump.losses.top:
            return (f"the loss then jumped again, to {loss:.3g} at step {step}, "
                    f"{loss / jump.losses.top:.0f}x the highest before the first jump: a "
                    "sign of an exploding gradient."), {"loss": loss}
        if spike is not None:
            return (f"the gradient norm then jumped to {norm:.3g} at step {step}, "
                    f"{spike.ratio:.3g}x the {'90th percentile' if spike.warm else 'largest'} "
                    f"of the steps before: the weights moved where the gradient is steep, a "
                    "sign of an exploding gradient."), {"grad_norm": norm}
        if self._checks_after["jump"] < CONFIRM_STEPS or not base.finite(loss):
            return None  # _came_back has dropped it if a loss was usual again
        return (f"the loss stayed above the 90th percentile of the steps before it "
                f"({jump.usual:.3g}) at each of the {CONFIRM_STEPS} steps logged after (up to "
                f"{loss:.3g} at step {step}): the model did not come back (a hard batch "
                "leaves the next steps as they were; a healthy run has one such step in ten), "
                "a sign of an exploding gradient."), {"loss": loss}

    def _confirmed(self, candidate, step, after, evidence):
        if isinstance(candidate, _Jump):
            also = f" ({candidate.also})" if candidate.also else ""
            return self._jump_finding(candidate, f"The loss jumped to {candidate.loss:.3g} at "
                                      f"step {candidate.step}, {candidate.against}{also}, and "
                                      + after, {**evidence, "step": step})
        return self._spike_finding(candidate, after, {**evidence, "step": step})

    def _jump_finding(self, jump, message, evidence):
        return base.Finding(
            "exploding", None, jump.loss, jump.threshold, "loss", message,
            evidence={"loss": jump.loss, "jump_step": jump.step, "loss_level": jump.losses.median,
                      "loss_top": jump.losses.top, **evidence},
            advice="clip",
        )

    def _spike_finding(self, spike, after, evidence):
        what, unit = _words(spike.source)
        if spike.warm:
            against = f"{spike.ratio:.0f}x the 90th percentile of the last {spike.count} {unit}"
        else:
            against = f"{spike.ratio:.3g}x the largest of the first {spike.count} {unit}"
        message = (f"The {what} jumped to {spike.norm:.3g} at step {spike.step}, {against} "
                   f"({spike.base:.3g}), and " + after)
        return base.Finding(
            "exploding", None, spike.norm, spike.threshold, "grad_norm", message,
            evidence={"grad_norm": spike.norm, "spike_step": spike.step,
                      "norm_reference": spike.base, "loss_top": spike.losses.top,
                      "loss_level": spike.losses.median, **evidence},
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
