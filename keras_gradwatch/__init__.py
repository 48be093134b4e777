"""keras_gradwatch: truncated BPTT for Keras stateful RNNs, and gradient
diagnostics you can see.

Public API:

- `TruncatedBPTT`: a `keras.Model` that trains a stateful recurrent model
  window by window (truncated backpropagation through time) inside `fit`.
- `errors`: the package's exceptions.
"""

from keras_gradwatch import errors
from keras_gradwatch.errors import InvalidInputError
from keras_gradwatch.errors import KerasGradwatchError
from keras_gradwatch.tbptt import TruncatedBPTT

__version__ = "0.1.0"

__all__ = [
    "InvalidInputError",
    "KerasGradwatchError",
    "TruncatedBPTT",
    "errors",
]
