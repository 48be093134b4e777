"""Private: truncated BPTT that cuts off most of the gradient (`truncation`).

On a `TruncatedBPTT` model each update back-propagates through `backprop`
steps; the measured profile (over the whole probe sequence) says how much
of the gradient lies beyond them: its truncation bias (Aicher, Foti & Fox
2019, `stats.truncation_bias`). A `truncation` verdict needs both:

- the bias above `CUT_SHARE` (one half): the updates follow less of the
  gradient than they leave out;
- the loss has stalled (`trend`: the validation loss, else the epoch-mean
  training loss, not 1 % below its best earlier epoch). A model whose loss
  still falls at a short window is learning what it can see, and a short
  window is often chosen on purpose, for speed.

It is its own kind, not a part of `vanishing`: the gradient does not fade,
it is cut; the fix is a longer span, not another layer; and a user who
truncates on purpose can switch it off alone (`actions={"truncation": None}`).
Reported once per epoch verdict and layer.
"""

import math

import numpy as np

from keras_gradwatch.core._detectors import base

# The share of the measured gradient beyond `backprop` above which the
# updates follow less of it than they leave out.
CUT_SHARE = 0.5


class TruncationBias(base.Detector):
    """Truncated BPTT that cuts off most of the gradient while the loss stalls.

    Args:
        tolerance: The tolerance of the suggested span (`GradWatch`'s).
    """

    kind = "truncation"
    moment = "layer"
    needs = ("profile", "backprop", "trend")

    def __init__(self, tolerance=0.05):
        self.tolerance = tolerance
        self._reported = {}  # per layer, the epoch of the trend last reported

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.tolerance)

    def check(self, evidence):
        record, trend, backprop = evidence.profile, evidence.trend, evidence.backprop
        bias = record.truncation_bias
        if not np.isfinite(record.profile).all() or not math.isfinite(bias):
            return None
        if not bias > CUT_SHARE or not trend.stalled:
            return None
        if self._reported.get(evidence.layer) == trend.epoch:
            return None
        self._reported[evidence.layer] = trend.epoch
        length = len(record.profile)
        suggested = record.suggested_window
        if suggested >= length:
            span = (
                f"a span longer than the {length} measured steps (measure on longer "
                "sequences to see how far it reaches)"
            )
        else:
            span = f"backprop={suggested} (cuts off at most {self.tolerance:.0%} of it)"
        message = (
            f"Layer '{evidence.layer}' ({base.site_words(record.site)}, measured at step "
            f"{evidence.step}): truncated BPTT at backprop={backprop} cuts off "
            f"{bias:.0%} of the measured gradient (its share beyond {backprop} steps "
            f"back, Aicher et al. 2019), more than {CUT_SHARE:.0%}, and "
            f"{trend.describe()}: the updates follow less of the gradient than they "
            "leave out."
        )
        return base.Finding(
            "truncation", evidence.layer, bias, CUT_SHARE, "truncation_bias", message,
            evidence={"bias": bias, "backprop": backprop, "suggested": suggested,
                      "trend": trend},
            remedy=(
                f"Back-propagate further: {span}, e.g. TruncatedBPTT(..., "
                f"backprop={max(suggested, backprop + 1)}), or window='auto'."
            ),
        )
