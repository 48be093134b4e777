"""Private: updates that rewrite a layer (`exploding`), judged per update.

`GradWatch` measures ‖Δw‖/‖w‖ of each layer over a step (`_update_ratio`).
A step can hold several optimizer updates: one per window of a
`TruncatedBPTT` batch, `steps_per_execution` of a plain model. Their
combined change is at most the sum of their sizes, so the step's ratio
divided by its number of updates is a lower bound of the mean ratio of one
update: that is what is judged (a stateful GRU at window 10 moved its
weights by 0.18 over a step of 25 window updates: 0.0072 per update, a
healthy value). An `exploding` verdict needs one of:

- the per-update ratio at least `WRECK` (1): an update as large as the
  layer's weights;
- above `HIGH` (0.1, 100x the healthy 1e-3 of CS231n) at `PATIENCE` (3)
  measured steps in a row (a small layer, a head of a few weights, can move
  by more than a tenth in one healthy early update).
"""

import math

from keras_gradwatch import _update_ratio
from keras_gradwatch._detectors import base


class UpdateRatio(base.Detector):
    """Per-update update-to-weight ratios that rewrite a layer."""

    kind = "exploding"
    moment = "step"
    needs = ("update_ratios",)

    def __init__(self):
        self._high = {}  # per layer, measured steps in a row above HIGH

    def check(self, evidence):
        updates = max(1, int(evidence.step_updates or 1))
        found = []
        for name, ratio in evidence.update_ratios.items():
            if not math.isfinite(ratio):
                continue  # the non-finite checks report it
            per_update = ratio / updates
            streak = self._high.get(name, 0) + 1 if per_update > _update_ratio.HIGH else 0
            self._high[name] = streak
            if per_update < _update_ratio.WRECK and streak < _update_ratio.PATIENCE:
                continue
            found.append(self._finding(evidence.step, name, ratio, updates, per_update, streak))
        if not found:
            return None
        # One finding per step: the layer with the largest per-update ratio.
        return max(found, key=lambda finding: finding.value)

    def _finding(self, step, name, ratio, updates, per_update, streak):
        why = (
            "an update as large as the layer" if per_update >= _update_ratio.WRECK
            else f"above {_update_ratio.HIGH:g} at {streak} measured steps in a row"
        )
        size = (
            f"by {ratio:.3g} of its weights"
            if updates == 1
            else f"by {ratio:.3g} of its weights over its {updates} updates, at least "
            f"{per_update:.3g} per update"
        )
        return base.Finding(
            "exploding", name, per_update, _update_ratio.HIGH, "update_ratio",
            f"Step {step} changed layer '{name}' {size} (‖Δw‖/‖w‖; about "
            f"{_update_ratio.HEALTHY:g} is healthy, CS231n): {why}, so the updates "
            "rewrite the layer, the earliest sign of a blow-up.",
            evidence={"ratio": ratio, "updates": updates, "per_update": per_update,
                      "streak": streak},
            advice="lr_or_clip",
        )
