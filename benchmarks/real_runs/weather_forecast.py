"""Time-ordered forecasting: temperature 12 hours ahead from the past days.

Modelled on keras-io `examples/timeseries/timeseries_weather_forecasting.py`:
Jena climate (7 selected features, one row per 10 minutes, normalised by
the training part's mean and std), windows made by
`keras.utils.timeseries_dataset_from_array` with `sampling_rate=6` (one
row per hour) and no shuffling: batches follow the time order, epoch after
epoch. LSTM(32) + Dense(1), Adam(1e-3), MSE, validation on the later part
of the series, EarlyStopping on `val_loss`. The table is generated
(`_data.weather`): 16,000 rows (420,551), 5 days of past (120 hourly
steps) as in the example, batch 256, 5 epochs (10).
"""

import keras

from real_runs import _data
from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "forecasting: LSTM(32) on hourly windows, time-ordered (unshuffled), val data"
MODELLED_ON = "keras-io examples/timeseries/timeseries_weather_forecasting.py"
TRUTH = Truth("healthy", note="unshuffled: the training loss of a stretch depends on the season")

STEP = 6  # one row per hour
FUTURE = 72  # 12 hours ahead


def datasets(rows, past, seed, batch_size=256, split_fraction=0.715):
    """Training and validation datasets as the keras-io example builds them."""
    features = _data.weather(rows, seed)
    train_split = int(split_fraction * rows)
    features = _data.normalize(features, train_split)
    train, val = features[:train_split], features[train_split:]
    start = past + FUTURE
    sequence_length = past // STEP
    dataset_train = keras.utils.timeseries_dataset_from_array(
        train, features[start:start + train_split, 1], sequence_length=sequence_length,
        sampling_rate=STEP, batch_size=batch_size, shuffle=False,
    )
    x_end = len(val) - past - FUTURE
    dataset_val = keras.utils.timeseries_dataset_from_array(
        val[:x_end], features[train_split + start:, 1], sequence_length=sequence_length,
        sampling_rate=STEP, batch_size=batch_size, shuffle=False,
    )
    return dataset_train, dataset_val, sequence_length


def build(sequence_length, features=7, learning_rate=1e-3):
    inputs = keras.Input(shape=(sequence_length, features))
    outputs = keras.layers.Dense(1)(keras.layers.LSTM(32)(inputs))
    model = keras.Model(inputs, outputs, name="weather_lstm")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=learning_rate), loss="mse")
    return model


def run(callbacks, seed, quick=False):
    train, val, length = datasets(6000 if quick else 16000, 720, seed)
    model = build(length)
    es_callback = keras.callbacks.EarlyStopping(monitor="val_loss", min_delta=0, patience=5)
    history = model.fit(train, epochs=1 if quick else 5, validation_data=val, shuffle=False,
                        verbose=0,
                        callbacks=[es_callback] + callbacks())
    return Outcome([model], [history])
