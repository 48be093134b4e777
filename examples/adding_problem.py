"""The adding problem, trained with truncated BPTT on a stateful LSTM.

The adding problem (Hochreiter & Schmidhuber 1997) is a classic test of
long-range memory: each sequence holds random values in [0, 1] and two marker
flags; the target is the sum of the two marked values. A model that ignores
the inputs can do no better than predicting the mean, 1.0, with a mean
squared error of 1/6 ~ 0.167 (the baseline).

The LSTM is stateful and wrapped in `TruncatedBPTT`: each sequence is cut
into windows, the state carries from window to window, and the update comes
from the final window, back-propagating through the last `--backprop` steps.

Run:

    python examples/adding_problem.py            # about 10 seconds
    python examples/adding_problem.py --quick    # a smoke test
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gradwatch import TruncatedBPTT  # noqa: E402

BASELINE_MSE = 1.0 / 6.0


def adding_problem(num_sequences, length, seed=0):
    """Generates the adding problem.

    Args:
        num_sequences: Number of sequences.
        length: Time steps per sequence.
        seed: Random seed.

    Returns:
        `(x, y)`: `x` of shape `(num_sequences, length, 2)` holds the values
        and the marker flags; `y` of shape `(num_sequences, 1)` the sums.
        One marker is in the first half of each sequence, one in the second.
    """
    rng = np.random.default_rng(seed)
    x = np.zeros((num_sequences, length, 2), dtype="float32")
    x[..., 0] = rng.uniform(size=(num_sequences, length))
    rows = np.arange(num_sequences)
    first = rng.integers(0, length // 2, num_sequences)
    second = rng.integers(length // 2, length, num_sequences)
    x[rows, first, 1] = 1.0
    x[rows, second, 1] = 1.0
    y = (x[rows, first, 0] + x[rows, second, 0])[:, None]
    return x, y.astype("float32")


def build_model(batch_size, units, window, backprop):
    """A stateful LSTM regressor wrapped in `TruncatedBPTT`."""
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(batch_size, None, 2)),
            keras.layers.LSTM(units, stateful=True),
            keras.layers.Dense(1),
        ],
        name="adding_lstm",
    )
    model = TruncatedBPTT(inner, window=window, backprop=backprop)
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--window", type=int, default=10)
    parser.add_argument("--backprop", type=int, default=50)
    parser.add_argument("--units", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--sequences", type=int, default=4096)
    parser.add_argument("--quick", action="store_true", help="tiny run")
    args = parser.parse_args(argv)
    if args.quick:
        args.sequences, args.epochs = 256, 2
    keras.utils.set_random_seed(0)
    batch_size = 64
    x, y = adding_problem(args.sequences, args.length, seed=0)
    x_val, y_val = adding_problem(512, args.length, seed=1)
    model = build_model(batch_size, args.units, args.window, args.backprop)
    print(
        f"Adding problem, T={args.length}: stateful LSTM({args.units}), "
        f"TruncatedBPTT(window={args.window}, backprop={args.backprop}). "
        f"Baseline MSE {BASELINE_MSE:.3f}."
    )
    history = model.fit(
        x,
        y,
        epochs=args.epochs,
        validation_data=(x_val, y_val),
        verbose=2,
    )
    losses = history.history["val_loss"]
    print(
        f"Validation MSE: {losses[0]:.4f} after the first epoch, "
        f"{losses[-1]:.4f} after the last (baseline {BASELINE_MSE:.3f})."
    )
    return history


if __name__ == "__main__":
    main()
