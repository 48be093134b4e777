"""Private: what `GradWatch` needs to know about the model it watches.

Which Keras model holds the layers (a `TruncatedBPTT` wraps one), whether
its optimizer scales the loss, which recurrent layers are gated, which
optimizer to name in advice, and where non-finite weights are.
"""

import keras
import numpy as np

from keras_gradwatch.core import _compat
from keras_gradwatch.core import _state
from keras_gradwatch.core import measurement
from keras_gradwatch.core._detectors.base import LayerFacts


def inner(model):
    """The Keras model that holds the layers (unwraps `TruncatedBPTT`, as the
    measurement does: this wing does not import the `tbptt` wing)."""
    return measurement._unwrap(model)[0]


def is_tbptt(model):
    return measurement._unwrap(model)[1] is not None


def loss_scaled(model):
    """Whether the model's optimizer is a `LossScaleOptimizer`."""
    return isinstance(getattr(model, "optimizer", None), keras.optimizers.LossScaleOptimizer)


def iterations(model, readings=None):
    """The optimizer's update count (0 without an optimizer): as the step
    read it (`readings`, its `_train_step.StepReadings`) if it did, else
    read now."""
    if readings is not None and readings.iterations is not None:
        return readings.iterations
    optimizer = getattr(model, "optimizer", None)
    return int(optimizer.iterations.numpy()) if optimizer is not None else 0


def tbptt_settings(model):
    """`{"window", "backprop", "reset"}` of a `TruncatedBPTT` (the window in
    use, and with `window="auto"` its settings as `auto_window`), else None."""
    if not is_tbptt(model):
        return None
    settings = {"window": model.window, "backprop": model.backprop, "reset": model.reset}
    if model.auto_window:
        settings["auto_window"] = {
            "tolerance": model.tolerance,
            "min_window": model.min_window,
            "max_window": model.max_window,
        }
    return settings


def optimizer_name(model):
    """How advice names the model's optimizer, e.g. "keras.optimizers.Adam"."""
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
        optimizer = optimizer.inner_optimizer
    kind = type(optimizer) if optimizer is not None else keras.optimizers.Adam
    if kind.__module__.split(".")[0] == "keras":
        return f"keras.optimizers.{kind.__name__}"
    return kind.__name__


def layer_facts(model):
    """`LayerFacts` of every recurrent layer of a model, by name."""
    facts = {}
    for layer in _state.recurrent_layers(model):
        facts[layer.name] = _cell_facts(getattr(layer, "cell", None))
    for layer in _compat.sublayers(model):
        if isinstance(layer, keras.layers.Bidirectional):
            facts[layer.name] = _cell_facts(getattr(layer.forward_layer, "cell", None))
    return facts


def weights_finite(model):
    """Whether every weight of the model is finite."""
    return all(_finite(weight) for weight in model.weights)


def first_nonfinite_layer(model):
    """The name of the first layer (in model order) with a non-finite
    weight, or None."""
    for layer in model.layers:
        if not all(_finite(weight) for weight in layer.weights):
            return layer.name
    return None


def _finite(weight):
    return bool(np.isfinite(np.asarray(weight.numpy(), dtype="float64")).all())


def _cell_facts(cell):
    if isinstance(cell, keras.layers.LSTMCell):
        return LayerFacts("LSTM", bool(cell.unit_forget_bias))
    if isinstance(cell, keras.layers.GRUCell):
        return LayerFacts("GRU")
    if isinstance(cell, keras.layers.SimpleRNNCell):
        return LayerFacts("SimpleRNN")
    return LayerFacts()
