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
  measured steps in a row, with the step loss then above the highest loss of
  the `spikes.LEVEL_STEPS` steps before the first of them: the updates undo
  what the layer learned. A small layer, a head of a few weights, can move
  by more than a tenth in one healthy early update; and an adaptive
  optimizer's first updates move a small-initialised layer (an embedding
  drawn from +-0.05, at learning rate 1e-2) by a fifth to a third of its
  weights, update after update, while the loss sits at its start or falls:
  rewriting an untrained layer is learning.
"""

import math

from keras_gradwatch.core import _update_ratio
from keras_gradwatch.core._detectors import base
from keras_gradwatch.core._detectors.spikes import LEVEL_STEPS


class UpdateRatio(base.Detector):
    """Per-update update-to-weight ratios that rewrite a layer."""

    kind = "exploding"
    moment = "step"
    needs = ()  # every step's loss; ratios when taken

    def __init__(self):
        self._high = {}  # per layer, measured steps in a row above HIGH
        self._before = {}  # per layer, (first step, highest recent loss) of its streak
        self._losses = base.RollingWindow(LEVEL_STEPS)

    def begin_fit(self):
        self._losses = base.RollingWindow(LEVEL_STEPS)

    def check(self, evidence):
        recent = self._losses.max() if len(self._losses) else None
        self._losses.add(evidence.loss)
        if not evidence.update_ratios:
            return None
        return self._check(evidence, recent)

    def _check(self, evidence, recent):
        updates = max(1, int(evidence.step_updates or 1))
        found = []
        for name, ratio in evidence.update_ratios.items():
            if not math.isfinite(ratio):
                continue  # the non-finite checks report it
            per_update = ratio / updates
            streak = self._high.get(name, 0) + 1 if per_update > _update_ratio.HIGH else 0
            self._high[name] = streak
            if streak == 1:
                self._before[name] = (evidence.step, recent)
            if per_update < _update_ratio.WRECK:
                if streak < _update_ratio.PATIENCE:
                    continue
                _, top = self._before[name]
                if not (base.finite(top) and base.finite(evidence.loss) and evidence.loss > top):
                    continue  # the loss has not risen: the updates are learning
            found.append(self._finding(evidence, name, ratio, updates, per_update, streak))
        if not found:
            return None
        # One finding per step: the layer with the largest per-update ratio.
        return max(found, key=lambda finding: finding.value)

    def _finding(self, evidence, name, ratio, updates, per_update, streak):
        step = evidence.step
        if per_update >= _update_ratio.WRECK:
            why = "an update as large as the layer"
        else:
            first, top = self._before[name]
            why = (
                f"above {_update_ratio.HIGH:g} at {streak} measured steps in a row, and "
                f"the loss rose to {evidence.loss:.3g}, above the highest of the "
                f"{LEVEL_STEPS} steps before step {first} ({top:.3g})"
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
