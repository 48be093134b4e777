"""TBPTT on a long sensor stream: a stateful GRU predicts the next reading.

Modelled on the classic stateful-RNN stream set-up (one long recording cut
into parallel streams, state carried from batch to batch, as in the
stateful LSTM examples of Keras and this package's `examples/sine_stream.py`)
with `keras_gradwatch.TruncatedBPTT`: `make_streams(stream, 32, chunk=200)`,
a stateful GRU(32) + Dense(3), `TruncatedBPTT(window=10, reset="epoch")`,
Adam, MSE, validation streams from a held-out recording. The stream is
generated: a machine switching between load levels (dwell times of
hundreds of steps), its vibration (load plus a 37-step cycle plus noise),
and a temperature that follows the load slowly (a time constant of ~150
steps), 128,000 steps.
"""

import keras
import numpy as np

from keras_gradwatch import TruncatedBPTT
from keras_gradwatch.streams import make_streams
from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "TBPTT streams: stateful GRU(32), make_streams, reset='epoch', window 10"
MODELLED_ON = "Keras stateful-RNN stream training; keras_gradwatch examples/sine_stream.py"
TRUTH = Truth("healthy", note="one Keras step holds 20 window updates")

STREAMS = 32
CHUNK = 200


def recording(steps, seed):
    """`(steps, 3)` float32: load, vibration, temperature, standardised."""
    rng = np.random.default_rng(seed)
    load = np.empty(steps)
    level, t = rng.uniform(0, 1), 0
    while t < steps:
        dwell = int(rng.integers(100, 600))
        load[t:t + dwell] = level
        level, t = rng.uniform(0, 1), t + dwell
    load += rng.normal(0, 0.02, steps)
    time_ = np.arange(steps)
    vibration = load * (1 + 0.5 * np.sin(2 * np.pi * time_ / 37)) + rng.normal(0, 0.1, steps)
    temperature = np.empty(steps)
    temperature[0] = load[0]
    for i in range(1, steps):  # first-order lag, time constant ~150 steps
        temperature[i] = temperature[i - 1] + (load[i] - temperature[i - 1]) / 150
    temperature += rng.normal(0, 0.01, steps)
    table = np.stack([load, vibration, temperature], axis=1)
    table = (table - table.mean(axis=0)) / table.std(axis=0)
    return table.astype("float32")


def build():
    inner = keras.Sequential(
        [keras.Input(batch_shape=(STREAMS, None, 3)),
         keras.layers.GRU(32, stateful=True, return_sequences=True, name="gru"),
         keras.layers.Dense(3)],
        name="sensor_gru",
    )
    model = TruncatedBPTT(inner, window=10, reset="epoch")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    return model


def run(callbacks, seed, quick=False):
    steps = 16000 if quick else 128000
    x, y = make_streams(recording(steps, seed), STREAMS, chunk=CHUNK)
    val_steps = max(steps // 4, 2 * STREAMS * CHUNK + 1)  # two batches at least
    x_val, y_val = make_streams(recording(val_steps, seed + 1000), STREAMS, chunk=CHUNK)
    model = build()
    history = model.fit(x, y, batch_size=STREAMS, epochs=1 if quick else 5, shuffle=False,
                        validation_data=(x_val, y_val), verbose=0, callbacks=callbacks())
    persistence = float(np.mean((x_val - y_val) ** 2))
    return Outcome([model.model], [history], {"persistence_mse": persistence})
