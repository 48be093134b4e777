"""keras_gradwatch: truncated BPTT for Keras stateful RNNs, and gradient
diagnostics you can see.

Public API:

- `TruncatedBPTT`: a `keras.Model` that trains a stateful recurrent model
  window by window (truncated backpropagation through time) inside `fit`.
- `GradWatch`: the Keras callback that measures gradients during `fit`,
  raises alerts (`Alert`) on exploding, non-finite or vanishing gradients and
  keeps run records (`records.load_run` reads them back); its settings in
  groups: `Measuring`, `Alerting`, `AutoClip`.
- `measure`: one probed forward/backward pass; returns the gradient profile
  ‖∂L/∂h_t‖ against steps back from the loss, per layer (`Measurement`,
  `LayerProfile`).
- `layers`: recurrent layers (`SimpleRNN`, `GRU`, `LSTM`, `RNN`) whose
  per-step state gradient can be measured, and the `Probe` marker layer.
- `depth`: `DepthProfile`, the gradient reaching each layer, in execution
  order (`Measurement.depth`, recorded with every `GradWatch` measurement).
- `stats`: pure functions on a profile (`decay_rate`, `horizon`,
  `truncation_bias`, `suggested_window`).
- `records`, `plots`, `report`, `cli`: the run records, the plots and the
  report drawn from them, and the `gradwatch` command.
- `streams`: `make_streams`, one long sequence laid out as parallel
  streams for `TruncatedBPTT(..., reset="epoch")`.
- `inference`: `with_batch_size`, a trained stateful model rebuilt for
  another batch size (e.g. 1, to generate step by step).
- `errors`: the package's exceptions.

Importing the package is light: `records`, `plots`, `report`, `cli`,
`stats`, `depth`, `alerts` and `errors` do not import TensorFlow (the `gradwatch`
command starts in a fraction of a second). The Keras parts (`GradWatch`,
`TruncatedBPTT`, `measure`, `layers`...) are imported on first use. The
package's layers and `TruncatedBPTT` are registered with Keras (for
`keras.models.load_model`) as soon as Keras is imported, before or after
this package.
"""

import importlib

from keras_gradwatch import _moved
from keras_gradwatch import _registration
from keras_gradwatch.core import alerts
from keras_gradwatch.core import depth
from keras_gradwatch.core import errors
from keras_gradwatch.core import stats
from keras_gradwatch.core.alerts import Alert
from keras_gradwatch.core.errors import GradientAlertError
from keras_gradwatch.core.errors import GradientWarning
from keras_gradwatch.core.errors import InvalidInputError
from keras_gradwatch.core.errors import KerasGradwatchError
from keras_gradwatch.core.errors import NotMeasurableError
from keras_gradwatch.core.errors import RunDirectoryError
from keras_gradwatch.core.errors import RunFormatError
from keras_gradwatch.core.errors import RunLockedError
from keras_gradwatch.core.errors import RunRecordWarning
from keras_gradwatch.runs import cli
from keras_gradwatch.runs import plots
from keras_gradwatch.runs import records
from keras_gradwatch.runs import report
from keras_gradwatch.tbptt import inference
from keras_gradwatch.tbptt import streams

# Names whose modules import Keras (and so TensorFlow): imported on first
# use, so that the records, plots, report and CLI start fast.
_LAZY = {
    "Alerting": ("keras_gradwatch.watch.groups", "Alerting"),
    "AutoClip": ("keras_gradwatch.watch.groups", "AutoClip"),
    "GradWatch": ("keras_gradwatch.watch.callback", "GradWatch"),
    "LayerProfile": ("keras_gradwatch.core.measurement", "LayerProfile"),
    "Measuring": ("keras_gradwatch.watch.groups", "Measuring"),
    "Measurement": ("keras_gradwatch.core.measurement", "Measurement"),
    "TruncatedBPTT": ("keras_gradwatch.tbptt.model", "TruncatedBPTT"),
    "callback": ("keras_gradwatch.watch.callback", None),
    "layers": ("keras_gradwatch.core.layers", None),
    "measure": ("keras_gradwatch.core.measurement", "measure"),
    "measurement": ("keras_gradwatch.core.measurement", None),
    "tbptt": ("keras_gradwatch.tbptt", None),
}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'keras_gradwatch' has no attribute {name!r}")
    module, attribute = _LAZY[name]
    value = importlib.import_module(module)
    if attribute is not None:
        value = getattr(value, attribute)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY))


# The documented import paths of the modules that moved into the core and
# the wings (`import keras_gradwatch.records`, `from keras_gradwatch.layers
# import LSTM`): the modules themselves, loaded on first use.
_moved.install()

# Registers the layers and TruncatedBPTT with Keras for `load_model`: now
# if Keras is loaded, else as soon as it is.
_registration.register_when_keras_loads()

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "Alerting",
    "AutoClip",
    "GradWatch",
    "GradientAlertError",
    "GradientWarning",
    "InvalidInputError",
    "KerasGradwatchError",
    "LayerProfile",
    "Measurement",
    "Measuring",
    "NotMeasurableError",
    "RunDirectoryError",
    "RunFormatError",
    "RunLockedError",
    "RunRecordWarning",
    "TruncatedBPTT",
    "alerts",
    "cli",
    "depth",
    "errors",
    "inference",
    "layers",
    "measure",
    "plots",
    "records",
    "report",
    "stats",
    "streams",
]

