"""Private: the learning rate over a run's recent steps, and its rises.

Pure: numbers in, numbers out (no TensorFlow, no model). `GradWatch` adds
the learning rate of each step (`_learning_rate.LearningRateReader`); the
alert advice asks whether it rose before a blow-up, by how much and when
(`_advice`).

A rise counts when the rate at the step is at least `MIN_RISE` times its
lowest value over the last `LOOKBACK` steps:

- `LOOKBACK` is the span the step detectors compare a step with (their
  rolling history of 100 steps, `alerts.RollingWindow`): a jump is a step
  far above those steps, so a learning rate higher now than during them
  is a change between the stretch judged normal and the step judged not;
- `MIN_RISE` = 2: gradient descent on a quadratic diverges once the
  learning rate passes 2/λ (λ the largest curvature), and a tuned rate
  sits within a factor 2 of that edge; a rate that at least doubled can
  have crossed it, a smaller rise hardly.
"""

import collections
import dataclasses
import math

LOOKBACK = 100
MIN_RISE = 2.0


@dataclasses.dataclass(frozen=True)
class Rise:
    """A rise of the learning rate.

    Attributes:
        factor: `after / before`.
        before: The lowest rate in the look-back, before the rise.
        after: The rate at the step asked about.
        start: The last step at `before`.
        end: The first step after `start` at `after` or above.
    """

    factor: float
    before: float
    after: float
    start: int
    end: int

    def sentence(self):
        """How advice names it, e.g. "the learning rate rose 1000x at step
        27, from 0.001 to 1".

        Example:

        >>> Rise(1000.0, 0.001, 1.0, 26, 27).sentence()
        'the learning rate rose 1000x at step 27, from 0.001 to 1'
        >>> Rise(10.0, 1e-4, 1e-3, 0, 50).sentence()
        'the learning rate rose 10x between steps 0 and 50, from 0.0001 to 0.001'
        """
        when = (f"at step {self.end}" if self.end == self.start + 1
                else f"between steps {self.start} and {self.end}")
        # 1000x, not 1e+03x: a factor reads as a number up to a million.
        times = f"{self.factor:.0f}" if 1000 <= self.factor < 1e6 else f"{self.factor:.3g}"
        return (f"the learning rate rose {times}x {when}, "
                f"from {self.before:.3g} to {self.after:.3g}")


class LearningRateHistory:
    """The learning rate of a run's last steps.

    Args:
        lookback: Number of steps kept (and looked back over).

    Example:

    >>> history = LearningRateHistory()
    >>> for step in range(1, 30):
    ...     history.add(step, 1e-3 if step < 27 else 1.0)
    >>> history.rise_before(29).sentence()
    'the learning rate rose 1000x at step 27, from 0.001 to 1'
    >>> history.rise_before(26) is None
    True
    """

    def __init__(self, lookback=LOOKBACK):
        self.lookback = lookback
        self._rates = collections.deque(maxlen=lookback)  # (step, rate), steps ascending

    def add(self, step, rate):
        """Adds the rate of `step` (None or a non-positive or non-finite
        rate is not a learning rate and is left out)."""
        if rate is None or not math.isfinite(rate) or not rate > 0:
            return
        if self._rates and step <= self._rates[-1][0]:
            # A step again (a run resumed at an earlier count): start over.
            self._rates.clear()
        self._rates.append((int(step), float(rate)))

    def __len__(self):
        return len(self._rates)

    def latest(self):
        """The most recent rate, or None."""
        return self._rates[-1][1] if self._rates else None

    def at(self, step):
        """The rate of the latest step at or before `step`, or None."""
        found = None
        for seen, rate in self._rates:
            if seen > step:
                break
            found = rate
        return found

    def rise_before(self, step, min_rise=MIN_RISE):
        """Whether the rate rose up to `step`, within the look-back.

        Args:
            step: The step of the blow-up (its own rate counts: the update
                of that step used it).
            min_rise: The least `after / before` that counts.

        Returns:
            A `Rise`, or None.
        """
        window = [(s, r) for s, r in self._rates if step - self.lookback < s <= step]
        if len(window) < 2:
            return None
        after = window[-1][1]
        lowest = min(r for _, r in window[:-1])
        if after < min_rise * lowest:
            return None
        start = max(s for s, r in window[:-1] if r == lowest)
        end = next(s for s, r in window if s > start and r >= after)
        return Rise(after / lowest, lowest, after, start, end)
