"""A real blow-up: a ReLU SimpleRNN trained with SGD and momentum diverges.

The keras-io weather forecaster (`timeseries_weather_forecasting.py`,
the same generated Jena-like table as `weather_forecast`) as a user
changes it: the LSTM swapped for `SimpleRNN(64, activation="relu")` (the
IRNN idea of Keras's old `mnist_irnn.py` example, ReLU units with
unbounded activations) and Adam for `SGD(0.03, momentum=0.9)`, batch 64,
with `TerminateOnNaN` as careful scripts add it. The loss is bumpy for a
few dozen to a few hundred steps (spikes of 10-90x), then the activations
overflow: 1e5 to 1e28, then NaN, within the first two epochs on every seed
tried (1-4).
"""

import keras

from real_runs._common import Outcome
from real_runs._common import Truth
from real_runs.weather_forecast import datasets

TITLE = "blow-up: ReLU SimpleRNN(64), SGD(0.03, momentum 0.9) -> loss 1e20, NaN"
MODELLED_ON = "keras-io timeseries_weather_forecasting.py with keras mnist_irnn.py's ReLU RNN"
TRUTH = Truth("blow-up", detect=("exploding", "nonfinite"), forbid=("vanishing",),
              by_loss_jump=True, note="spikes, then overflow to NaN")


def build(sequence_length, features=7):
    model = keras.Sequential(
        [keras.Input(shape=(sequence_length, features)),
         keras.layers.SimpleRNN(64, activation="relu"),
         keras.layers.Dense(1)],
        name="relu_rnn",
    )
    model.compile(optimizer=keras.optimizers.SGD(0.03, momentum=0.9), loss="mse")
    return model


def run(callbacks, seed, quick=False):
    train, val, length = datasets(20000, 432, seed, batch_size=64)
    model = build(length)
    history = model.fit(train, epochs=1 if quick else 3, validation_data=val, shuffle=False,
                        verbose=0, callbacks=[keras.callbacks.TerminateOnNaN()] + callbacks())
    return Outcome([model], [history])
