"""Timeseries classification from scratch: a fully convolutional network on
FordA-like engine-noise series, with the example's three callbacks.

Modelled on keras-io `examples/timeseries/timeseries_classification_from_scratch.py`:
the FordA set of the UCR archive (univariate series of 500 readings,
z-normalised per series, labels -1/1 mapped to 0/1, reshaped to
`(N, 500, 1)`), three Conv1D(64, 3, "same") - BatchNormalization - ReLU
blocks, GlobalAveragePooling1D, `Dense(2, "softmax")`, Adam,
`sparse_categorical_crossentropy`, batch 32, `validation_split=0.2`,
and the callbacks `ModelCheckpoint(save_best_only, monitor="val_loss")`,
`ReduceLROnPlateau(factor=0.5, min_lr=1e-4)` and `EarlyStopping` (their
patience scaled down with the epochs: 20 and 50 of 500 epochs there).

The series are generated: coloured noise (AR(1)) with an engine hum whose
frequency tells the class (a faulty engine hums higher) and random bursts;
3,000 series (3,601), 15 epochs (500). The training loss falls from 0.69
to under 0.3 in a few epochs; the validation loss lags for 3-4 epochs
(BatchNormalization's moving statistics settle), then follows it.
"""

import pathlib
import shutil
import tempfile

import keras
import numpy as np

from real_runs._common import Outcome
from real_runs._common import Truth

TITLE = "FCN Conv1D+BN on FordA-like series (500 steps), sparse CE, ckpt/ReduceLR/EarlyStop"
MODELLED_ON = "keras-io examples/timeseries/timeseries_classification_from_scratch.py"
TRUTH = Truth("healthy", note="BatchNorm convnet; ReduceLROnPlateau may halve the learning rate")

LENGTH = 500


def engine_noise(count, seed):
    """FordA-like rows: labels in {-1, 1} and z-normalised series `(count, 500)`."""
    rng = np.random.default_rng(seed)
    labels = rng.choice([-1, 1], count)
    t = np.arange(LENGTH)
    noise = np.zeros((count, LENGTH))
    shocks = rng.normal(0, 1, (count, LENGTH))
    for i in range(1, LENGTH):  # coloured noise, as a motor sensor's
        noise[:, i] = 0.8 * noise[:, i - 1] + shocks[:, i]
    frequency = np.where(labels == 1, 0.10, 0.04) * rng.uniform(0.95, 1.05, count)
    amplitude = rng.uniform(0.5, 1.5, count)
    phase = rng.uniform(0, 2 * np.pi, count)
    hum = amplitude[:, None] * np.sin(2 * np.pi * frequency[:, None] * t + phase[:, None])
    bursts = (rng.random((count, LENGTH)) < 0.01) * rng.normal(0, 6, (count, LENGTH))
    series = noise + hum + bursts
    series = (series - series.mean(axis=1, keepdims=True)) / series.std(axis=1, keepdims=True)
    return series.astype("float32"), labels


def make_model(input_shape, num_classes):
    input_layer = keras.layers.Input(input_shape)
    x = input_layer
    for _ in range(3):
        x = keras.layers.Conv1D(filters=64, kernel_size=3, padding="same")(x)
        x = keras.layers.BatchNormalization()(x)
        x = keras.layers.ReLU()(x)
    gap = keras.layers.GlobalAveragePooling1D()(x)
    output_layer = keras.layers.Dense(num_classes, activation="softmax")(gap)
    return keras.models.Model(inputs=input_layer, outputs=output_layer, name="forda_fcn")


def run(callbacks, seed, quick=False):
    x_train, y_train = engine_noise(400 if quick else 3000, seed)
    x_train = x_train.reshape((x_train.shape[0], x_train.shape[1], 1))
    num_classes = len(np.unique(y_train))
    idx = np.random.default_rng(seed + 1).permutation(len(x_train))
    x_train, y_train = x_train[idx], y_train[idx]
    y_train[y_train == -1] = 0
    model = make_model(x_train.shape[1:], num_classes)
    folder = pathlib.Path(tempfile.mkdtemp(prefix="forda_"))
    chosen = [
        keras.callbacks.ModelCheckpoint(str(folder / "best_model.keras"), save_best_only=True,
                                        monitor="val_loss"),
        keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=3,
                                          min_lr=0.0001),
        keras.callbacks.EarlyStopping(monitor="val_loss", patience=6, verbose=0),
    ] + callbacks()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, batch_size=32, epochs=2 if quick else 15,
                        callbacks=chosen, validation_split=0.2, verbose=0)
    best = keras.models.load_model(folder / "best_model.keras")
    shutil.rmtree(folder, ignore_errors=True)
    return Outcome([model], [history], {
        "learning_rates": [float(v) for v in history.history.get("learning_rate", [])],
        "best_val_loss": round(float(min(history.history["val_loss"])), 4),
        "best_model_layers": len(best.layers),
    })
