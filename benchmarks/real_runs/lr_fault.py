"""A learning-rate fault: Adam's learning rate multiplied by 1000 at step 27.

The keras-io weather forecaster (`timeseries_weather_forecasting.py`: LSTM(32)
+ Dense(1), Adam(1e-3), MSE, time-ordered windows, validation data) with a
learning-rate callback of the user's that goes wrong, as a schedule written
in the wrong unit does: before the 27th update it sets the rate to 1000x
(1e-3 -> 1.0). The loss jumps within a few steps and stays high. With an
adaptive optimizer the step size is set by the learning rate, not by the
gradient's size: clipping the gradient cannot bound it, so the first advice
must be about the learning rate.
"""

import keras

from real_runs._common import Outcome
from real_runs._common import Truth
from real_runs.weather_forecast import build
from real_runs.weather_forecast import datasets

TITLE = "LR fault: Adam, a callback sets the learning rate x1000 at step 27"
MODELLED_ON = "keras-io timeseries_weather_forecasting.py + a faulty LR callback"
TRUTH = Truth("blow-up", detect=("exploding",), forbid=("vanishing",), by_loss_jump=True,
              advice=("learning rate", "learning_rate"),
              note="the step size jumps 1000x; clipping gradients cannot bound an Adam step")

FAULT_STEP = 27


class LearningRateFault(keras.callbacks.Callback):
    """Multiplies the optimizer's learning rate by `factor` before update `step`."""

    def __init__(self, step=FAULT_STEP, factor=1000.0):
        super().__init__()
        self.step, self.factor, self.done = step, factor, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.done += 1
        if self.done == self.step:
            rate = self.model.optimizer.learning_rate
            rate.assign(rate * self.factor)


def run(callbacks, seed, quick=False):
    train, val, length = datasets(22000, 432, seed)
    model = build(length)
    history = model.fit(train, epochs=1 if quick else 3, validation_data=val, shuffle=False,
                        verbose=0, callbacks=[LearningRateFault()] + callbacks())
    return Outcome([model], [history], {"fault_step": FAULT_STEP})
