"""Private: GradWatch's detectors, one module each, and the registry of kinds.

- `kinds`: the registry (`KINDS`), what actions, counts, plot markers and
  CSS read;
- `base`: the interface (`Detector`, `Evidence` in, `Finding` out) and what
  detectors share;
- `trend`: whether the loss still falls, on like-for-like data;
- the detectors: `spikes` (loss jumps, norm spikes the loss confirms),
  `nonfinite` (NaN/Inf, overflow), `growth` (growth in time),
  `update_ratio` (updates that rewrite a layer), `vanishing` (a vanishing
  tail while the loss stalls), `truncation` (truncated BPTT that cuts off
  most of the gradient while the loss stalls), `depth` (a gradient that
  vanishes or explodes across the layers).

Adding an alert kind: a module here with a `base.Detector` subclass, and
one `kinds.KindSpec` entry naming it. `build` makes one of each registered
detector for a `GradWatch`. Everything here is pure: numbers and arrays in,
no model, no TensorFlow.
"""

import importlib

from keras_gradwatch.core._detectors.base import Detector
from keras_gradwatch.core._detectors.base import Evidence
from keras_gradwatch.core._detectors.base import Finding
from keras_gradwatch.core._detectors.base import LayerFacts
from keras_gradwatch.core._detectors.base import RollingWindow
from keras_gradwatch.core._detectors.base import Settings
from keras_gradwatch.core._detectors.kinds import KINDS
from keras_gradwatch.core._detectors.kinds import KindSpec

__all__ = ["KINDS", "Detector", "Evidence", "Finding", "KindSpec", "LayerFacts",
           "RollingWindow", "Settings", "build", "detector_class"]


def detector_class(path):
    """The class named `"module.Class"` in this package."""
    module, name = path.rsplit(".", 1)
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


def build(settings, kinds=KINDS):
    """One detector of each kind's `detectors`, made from `settings`.

    Args:
        settings: A `base.Settings`.
        kinds: The registry (default `KINDS`).

    Returns:
        The detectors, in registry order.

    Raises:
        TypeError: A registered detector that declares another kind.
    """
    detectors = []
    for spec in kinds:
        for path in spec.detectors:
            cls = detector_class(path)
            if cls.kind != spec.name:
                raise TypeError(
                    f"Detector {path} declares kind {cls.kind!r} but is registered "
                    f"under {spec.name!r} in _detectors.kinds."
                )
            detectors.append(cls.from_settings(settings))
    return detectors
