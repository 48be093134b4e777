"""Truncated BPTT: `TruncatedBPTT` and what serves it.

`model` (`TruncatedBPTT`, the `keras.Model` wrapper), `_window_steps` (its
compiled steps), `_windows` (the window schedule in integers), `_fused`
(the fused LSTM path), `_layout_checks` and `_target_shapes` (the checks of
the data before any step), `_auto_window` (`window="auto"`), `streams`
(`make_streams`) and `inference` (`with_batch_size`).

It imports the core only. `keras_gradwatch.tbptt.TruncatedBPTT` (the
documented path of the former `tbptt` module) loads `model`, and so
TensorFlow, on first use; `streams` and `inference` import without it.
"""

import importlib

# The names of the former `keras_gradwatch.tbptt` module, now in `model`.
_MODEL_NAMES = ("AUTO_UNROLL_STEPS", "RESET_MODES", "TruncatedBPTT")


def __getattr__(name):
    if name not in _MODEL_NAMES:
        raise AttributeError(f"module 'keras_gradwatch.tbptt' has no attribute {name!r}")
    return getattr(importlib.import_module("keras_gradwatch.tbptt.model"), name)


def __dir__():
    return sorted(set(globals()) | set(_MODEL_NAMES))
