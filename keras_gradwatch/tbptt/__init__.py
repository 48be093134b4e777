"""Truncated BPTT: `TruncatedBPTT` and what serves it.

`model` (`TruncatedBPTT`, the `keras.Model` wrapper and its settings),
`_windowed_training` (its `fit`/`evaluate`/`predict` and train functions),
`_step_data` (the data model of a windowed step: `StepSettings`,
`WindowedBatch`), `_reset_policy` (when the state resets, whether `fit`
shuffles), `_window_steps` (its compiled steps: the windowed update loop),
`_forward_windows` (the forward-only passes), `_window_loss` (one window's
loss and metrics), `_recurrence_switch` (how the stateful layers run in a
step), `_windows` (the window schedule in integers), `_fused` (the fused
LSTM path), `_setting_checks` (the constructor's checks), `_call_arguments`
(Keras's call arguments by name), `_layout_checks` and `_target_shapes`
(the checks of the data before any step), `_auto_window`
(`window="auto"`), `streams` (`make_streams`) and `inference`
(`with_batch_size`).

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
