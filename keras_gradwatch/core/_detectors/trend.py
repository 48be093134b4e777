"""Private: whether the loss still falls, judged on like-for-like data.

"The loss stalls" (used by the vanishing and truncation detectors) is
judged at epoch ends only, on values that measure the same thing each time:

- the validation loss, when the fit has validation data: the same data
  every epoch, and what the user cares about;
- else the epoch-mean training loss (Keras's `loss` at the epoch end): the
  mean over the same training batches every epoch.

Never on means over windows of steps within an epoch: on time-ordered,
unshuffled data two windows cover different stretches of the data, and
their losses differ by the data, not by learning (a forecasting LSTM's
window means 0.3073 and 0.3104 hid a loss falling 0.385 -> 0.243 -> 0.169).

The loss stalls at an epoch when its value is not `LOSS_PROGRESS` (1 %)
below the lowest value of the earlier epochs of the same series.
"""

import dataclasses
import math

# The loss must be this share below its best earlier epoch to be falling.
LOSS_PROGRESS = 0.01

_SERIES_WORDS = {"val_loss": "validation loss", "loss": "epoch-mean training loss"}


@dataclasses.dataclass(frozen=True)
class Trend:
    """The loss's verdict at the latest epoch end.

    Attributes:
        epoch: The epoch of the latest value judged.
        series: `"val_loss"` or `"loss"`.
        latest: Its value at that epoch.
        best: The lowest value of the earlier epochs.
        best_epoch: The epoch of that value.
        stalled: Whether `latest` is not `LOSS_PROGRESS` below `best`.
    """

    epoch: int
    series: str
    latest: float
    best: float
    best_epoch: int
    stalled: bool

    def describe(self):
        """The verdict as a clause, e.g. "the validation loss has not fallen
        by 1 % below its best (0.631 at epoch 2): 0.64 at epoch 5"."""
        name = _SERIES_WORDS[self.series]
        if self.stalled:
            return (
                f"the {name} has not fallen by {LOSS_PROGRESS:.0%} below its best "
                f"earlier value ({self.best:.4g} at epoch {self.best_epoch}): "
                f"{self.latest:.4g} at epoch {self.epoch}"
            )
        return (
            f"the {name} is falling ({self.best:.4g} at epoch {self.best_epoch}, "
            f"{self.latest:.4g} at epoch {self.epoch})"
        )


class LossTrend:
    """The epoch-end losses of a run, and whether they have stalled.

    Example:

    >>> trend = LossTrend()
    >>> trend.epoch_end(0, loss=0.9, val_loss=None) is None
    True
    >>> trend.epoch_end(1, loss=0.6, val_loss=None).stalled
    False
    >>> trend.epoch_end(2, loss=0.598, val_loss=None).stalled
    True
    """

    def __init__(self):
        self._values = {"val_loss": [], "loss": []}  # (epoch, value) each
        self.latest = None

    def epoch_end(self, epoch, loss, val_loss):
        """Adds an epoch's losses (either may be None); returns the `Trend`
        now (None until a series has two finite values)."""
        for series, value in (("val_loss", val_loss), ("loss", loss)):
            if value is not None and math.isfinite(value):
                self._values[series].append((epoch, float(value)))
        for series in ("val_loss", "loss"):
            values = self._values[series]
            if len(values) >= 2:
                self.latest = _judge(series, values)
                return self.latest
        self.latest = None
        return None


def _judge(series, values):
    epoch, latest = values[-1]
    best_epoch, best = min(values[:-1], key=lambda item: item[1])
    return Trend(
        epoch=epoch,
        series=series,
        latest=latest,
        best=best,
        best_epoch=best_epoch,
        stalled=not latest < best - LOSS_PROGRESS * abs(best),
    )
