"""Healthy runs with heavy-tailed batch losses, for the step detectors' tests.

Six MLPs (64-64 ReLU, batch 32, 15 epochs, 4,000 rows of 20 Gaussian
features), each with GradWatch: a separable binary task, the same with 5 %
of the labels flipped, a 4-class task, and a regression whose targets carry
Student-t noise (df=2: one outlier row far from the rest); under Adam(1e-3)
and SGD(0.05, momentum=0.9). A well-fitted classifier's batch losses jump
10-75x their median now and then; the outlier regression's loss jumps
190-250x once an epoch. None of that is a blow-up, except the SGD
regression's first outlier update, which kills the ReLU network (its loss
stays 3-8x higher to the end).

    python tools/heavy_tailed_runs.py OUT_DIR    # about 2 minutes on 2 cores

Then `tools/step_series.py` stores their step records as test data.
"""

import pathlib
import sys

import keras
import numpy as np

from keras_gradwatch import GradWatch


def tasks(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(4000, 20)).astype("float32")
    w = rng.normal(size=20)
    y = (x @ w > 0).astype("float32")
    noisy = y.copy()
    flip = rng.random(4000) < 0.05
    noisy[flip] = 1 - noisy[flip]
    classes = np.digitize(x[:, 0], [-1, 0, 1]).astype("int32")
    outliers = (x @ w + rng.standard_t(2, size=4000)).astype("float32")
    return {
        "separable": (x, y, "binary_crossentropy", 1, "sigmoid"),
        "label_noise": (x, noisy, "binary_crossentropy", 1, "sigmoid"),
        "4class": (x, classes, "sparse_categorical_crossentropy", 4, "softmax"),
        "outlier_regression": (x, outliers, "mse", 1, None),
    }


def main(out):
    keras.utils.set_random_seed(0)
    for name, (x, y, loss, units, activation) in tasks().items():
        for optimizer in ("adam", "sgd"):
            model = keras.Sequential([
                keras.Input((20,)),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(64, activation="relu"),
                keras.layers.Dense(units, activation=activation),
            ])
            model.compile(optimizer=keras.optimizers.Adam(1e-3) if optimizer == "adam"
                          else keras.optimizers.SGD(0.05, momentum=0.9), loss=loss)
            folder = pathlib.Path(out) / f"{name}_{optimizer}"
            model.fit(x, y, batch_size=32, epochs=15, verbose=0, callbacks=[GradWatch(folder)])
            print(folder)


if __name__ == "__main__":
    main(sys.argv[1])
