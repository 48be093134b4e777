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

    python examples/adding_problem_tbptt.py            # about 10 seconds
    python examples/adding_problem_tbptt.py --quick    # a smoke test
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
from _tasks import ADDING_BASELINE_MSE  # noqa: E402
from _tasks import adding_problem  # noqa: E402

from keras_gradwatch import TruncatedBPTT  # noqa: E402

BASELINE_MSE = ADDING_BASELINE_MSE


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
