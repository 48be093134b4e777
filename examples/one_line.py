"""Adding GradWatch to an existing Keras script: one line.

Below is an ordinary Keras script (a GRU classifier of synthetic sensor
sequences). The only change is the `callbacks=[GradWatch(...)]` argument to
`fit`: after training, `runs/one_line/` holds the gradient plots, the
report and the records. This GRU learns slowly: the burst it must detect
lies 30 to 60 steps before the loss, and the report shows how much of the
gradient reaches that far.

Run:

    python examples/one_line.py [--quick]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gradwatch import GradWatch  # noqa: E402


def make_data(n, steps=60, seed=0):
    """Noisy sequences; label 1 when a burst occurs in the first half."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0, 1, size=(n, steps, 3)).astype("float32")
    y = rng.integers(0, 2, size=(n, 1))
    start = rng.integers(0, steps // 2 - 5, size=n)
    for i in np.flatnonzero(y[:, 0]):
        x[i, start[i] : start[i] + 5, 0] += 3.0
    return x, y.astype("float32")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", default="runs/one_line")
    args = parser.parse_args(argv)
    keras.utils.set_random_seed(0)
    x, y = make_data(256 if args.quick else 2048)
    model = keras.Sequential(
        [
            keras.Input((None, 3)),
            keras.layers.GRU(32),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    model.fit(
        x,
        y,
        epochs=1 if args.quick else 5,
        validation_split=0.2,
        verbose=2,
        callbacks=[GradWatch(args.runs)],  # <- the one added line
    )
    print(f"Gradient report: {os.path.join(args.runs, 'report.html')}")
    return model


if __name__ == "__main__":
    main()
