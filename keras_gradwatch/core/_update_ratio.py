"""Private: the update-to-weight ratio of each layer, ‖Δw‖ / ‖w‖ of a step.

The classic health signal of a training step (Karpathy, CS231n "Neural
Networks Part 3: ratio of weights:updates"): around 1e-3 is healthy; much
lower, the learning rate is likely too low; near 1, the step rewrites the
layer, the earliest sign of an abrupt blow-up (a first step that is too
large shows here before the loss moves).

`UpdateRatios` copies the weights of each top-level layer with trainable
weights after one step and compares them after the next. It does that at
`GradWatch`'s measurements, and at every step when a copy costs under
`EVERY_STEP_SHARE` of a step's time (small models). A "step" is one
`train_function` call: one update for a plain model, one per window of a
`TruncatedBPTT` batch (their combined change), `steps_per_execution`
updates when that is above 1; `updates` counts them (the optimizer's
`iterations` since the snapshot), and the `exploding` verdict is judged per
update (`_detectors.update_ratio`).
"""

import time

import numpy as np

# Ratios are taken at every step when a copy and a comparison cost less
# than this share of a step's time.
EVERY_STEP_SHARE = 0.02
# CS231n's healthy ratio, and how far above it a step "rewrites" a layer.
HEALTHY = 1e-3
HIGH = 0.1  # 100x the healthy ratio: the step replaces a tenth of the layer
PATIENCE = 3  # ... at this many measured steps in a row: an alert
WRECK = 1.0  # one update as large as the layer's weights: an alert at once


def update_ratio(before, after) -> float:
    """‖after − before‖ / ‖before‖ over all arrays of one layer (L2).

    Args:
        before: The layer's weights before the step (arrays).
        after: The same weights after it.

    Returns:
        The ratio; `inf` if the weights were all zero and moved, NaN if the
        weights are not finite, 0.0 if nothing moved.

    Example:

    >>> import numpy as np
    >>> update_ratio([np.array([3.0, 4.0])], [np.array([3.0, 4.05])])
    0.01
    """
    change = sum(float(np.sum((np.asarray(a, "float64") - np.asarray(b, "float64")) ** 2))
                 for b, a in zip(before, after))
    size = sum(float(np.sum(np.asarray(b, "float64") ** 2)) for b in before)
    if change == 0:
        return 0.0
    if size == 0:
        return float("inf")
    return round(float(np.sqrt(change / size)), 12)


class UpdateRatios:
    """Takes the update-to-weight ratios of a model's layers.

    Args:
        model: The model whose weights are updated (the wrapped model of a
            `TruncatedBPTT`).
    """

    def __init__(self, model):
        self.model = model
        self.layers = [
            (layer.name, layer.trainable_variables)
            for layer in model.layers
            if layer.trainable_variables
        ]
        self.every_step = False
        self._before = None
        self._iterations = None
        self._seconds = {}  # the latest time of a "snapshot" and a "compare"

    def snapshot(self, iterations=None):
        """Keeps the weights as they are now (after a step), and the
        optimizer's `iterations` then, if given."""
        self._iterations = iterations
        start = time.perf_counter()
        self._before = [[v.numpy().copy() for v in variables] for _, variables in self.layers]
        self._seconds["snapshot"] = time.perf_counter() - start

    @property
    def pending(self):
        """Whether a snapshot waits for the next step."""
        return self._before is not None

    def updates(self, iterations):
        """Optimizer updates since the snapshot (None if not known)."""
        if self._before is None or self._iterations is None or iterations is None:
            return None
        return iterations - self._iterations

    def ratios(self):
        """The ratios since the snapshot, by layer; forgets the snapshot."""
        if self._before is None:
            return None
        start = time.perf_counter()
        result = {
            name: update_ratio(before, [v.numpy() for v in variables])
            for (name, variables), before in zip(self.layers, self._before)
        }
        self._before = None
        self._seconds["compare"] = time.perf_counter() - start
        return result

    def decide(self, step_seconds):
        """Takes ratios at every step from now on if that costs under
        `EVERY_STEP_SHARE` of a step of `step_seconds`."""
        if len(self._seconds) == 2 and step_seconds and step_seconds > 0:
            cost = sum(self._seconds.values())
            self.every_step = cost < EVERY_STEP_SHARE * step_seconds
