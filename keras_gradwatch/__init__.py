"""keras_gradwatch: truncated BPTT for Keras stateful RNNs, and gradient
diagnostics you can see.

Public API:

- `TruncatedBPTT`: a `keras.Model` that trains a stateful recurrent model
  window by window (truncated backpropagation through time) inside `fit`.
- `GradWatch`: the Keras callback that measures gradients during `fit`,
  raises alerts (`Alert`) on exploding, non-finite or vanishing gradients and
  keeps run records (`records.load_run` reads them back).
- `measure`: one probed forward/backward pass; returns the gradient profile
  ‖∂L/∂h_t‖ against steps back from the loss, per layer (`Measurement`,
  `LayerProfile`).
- `layers`: recurrent layers (`SimpleRNN`, `GRU`, `LSTM`, `RNN`) whose
  per-step state gradient can be measured, and the `Probe` marker layer.
- `stats`: pure functions on a profile (`decay_rate`, `horizon`,
  `truncation_bias`, `suggested_window`).
- `records`, `plots`, `report`, `cli`: the run records, the plots and the
  report drawn from them, and the `gradwatch` command.
- `errors`: the package's exceptions.

Importing the package registers its layers and `TruncatedBPTT` with Keras,
so that `keras.models.load_model` finds them.
"""

from keras_gradwatch import alerts
from keras_gradwatch import cli
from keras_gradwatch import errors
from keras_gradwatch import layers
from keras_gradwatch import plots
from keras_gradwatch import records
from keras_gradwatch import report
from keras_gradwatch import stats
from keras_gradwatch.alerts import Alert
from keras_gradwatch.callback import GradWatch

from keras_gradwatch.errors import GradientAlertError
from keras_gradwatch.errors import GradientWarning
from keras_gradwatch.errors import InvalidInputError
from keras_gradwatch.errors import KerasGradwatchError
from keras_gradwatch.errors import RunDirectoryError
from keras_gradwatch.measurement import LayerProfile
from keras_gradwatch.measurement import Measurement
from keras_gradwatch.measurement import measure
from keras_gradwatch.tbptt import TruncatedBPTT

__version__ = "0.1.0"

__all__ = [
    "Alert",
    "GradWatch",
    "GradientAlertError",
    "GradientWarning",
    "InvalidInputError",
    "KerasGradwatchError",
    "LayerProfile",
    "Measurement",
    "RunDirectoryError",
    "TruncatedBPTT",
    "alerts",
    "cli",
    "errors",
    "layers",
    "measure",
    "plots",
    "records",
    "report",
    "stats",
]

