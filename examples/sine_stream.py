"""Stream training with truncated BPTT: one long signal per batch row.

Sixteen long noisy multi-frequency sine streams (periods between 20 and 400
steps) are cut into consecutive chunks of 500 steps: batch j holds chunk j
of every stream, so row i of a batch continues row i of the batch before
(the classic stateful layout). A stateful LSTM predicts the next value;
`TruncatedBPTT(window=25, backprop=50, reset="epoch")` carries the state
from window to window and from batch to batch, makes one update per 25
steps, and back-propagates through the last 50.

`GradWatch` measures the LSTM's gradient over whole 500-step chunks, far
beyond the 50 steps each update reaches: the decay plot draws the reach as a
red line, and the summary gives the truncation bias (the share of the
gradient beyond it, which training never sees) and the window that would
keep that share under 5 %.

Run (about a minute):

    python examples/sine_stream.py
    python examples/sine_stream.py --quick

Writes `runs/sine_stream/`.
"""

import argparse
import os
import pathlib
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
from _tasks import sine_streams  # noqa: E402

from keras_gradwatch import GradientWarning  # noqa: E402
from keras_gradwatch import GradWatch  # noqa: E402
from keras_gradwatch import TruncatedBPTT  # noqa: E402
from keras_gradwatch import layers  # noqa: E402

STREAMS = 16


def stream_batches(streams, chunk):
    """Lays streams out for `reset="epoch"`: batch j = chunk j of each.

    Args:
        streams: Array `(num_streams, length)`.
        chunk: Steps per batch.

    Returns:
        `(x, y)` of shape `(chunks * num_streams, chunk, 1)`: inputs, and
        the next value as targets.
    """
    count = (streams.shape[1] - 1) // chunk
    x = np.concatenate([streams[:, j * chunk : (j + 1) * chunk] for j in range(count)])
    y = np.concatenate([streams[:, j * chunk + 1 : (j + 1) * chunk + 1] for j in range(count)])
    return x[..., None], y[..., None]


def build_model(window, backprop, units=32):
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(STREAMS, None, 1)),
            layers.LSTM(units, stateful=True, return_sequences=True, name="lstm"),
            keras.layers.Dense(1),
        ],
        name="sine_lstm",
    )
    model = TruncatedBPTT(inner, window=window, backprop=backprop, reset="epoch")
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="mse")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--length", type=int, default=20_001, help="steps per stream")
    parser.add_argument("--chunk", type=int, default=500)
    parser.add_argument("--window", type=int, default=25)
    parser.add_argument("--backprop", type=int, default=50)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--runs", default="runs/sine_stream")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.length, args.epochs = 2_001, 1
    keras.utils.set_random_seed(0)
    x, y = stream_batches(sine_streams(STREAMS, args.length, seed=0), args.chunk)
    val_length = max(args.length // 4, 2 * args.chunk + 1)
    x_val, y_val = stream_batches(sine_streams(STREAMS, val_length, seed=1), args.chunk)
    persistence = float(np.mean((x_val - y_val) ** 2))
    model = build_model(args.window, args.backprop)
    run_dir = pathlib.Path(args.runs)
    watch = GradWatch(run_dir, every=20)
    print(
        f"{STREAMS} sine streams of {args.length} steps, batches of "
        f"{args.chunk}-step chunks; TruncatedBPTT(window={args.window}, "
        f"backprop={args.backprop}, reset='epoch')."
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientWarning)  # in the report
        history = model.fit(x, y, epochs=args.epochs, validation_data=(x_val, y_val),
                            verbose=2, callbacks=[watch])
    val = history.history["val_loss"][-1]
    record = watch.last_measurement.layers["lstm"]
    print(
        f"Next-value MSE on new streams: {val:.4f} (repeating the last value: "
        f"{persistence:.4f}).\nGradient over {len(record.profile)} steps: decay "
        f"{record.decay_rate:.3f}/step, horizon {record.horizon} steps; "
        f"{100 * record.truncation_bias:.2g} % of it lies beyond the "
        f"{args.backprop} steps each update reaches; a window of "
        f"{record.suggested_window} would keep that under 5 %.\n"
        f"Report: {run_dir / 'report.html'}"
    )
    return history, record


if __name__ == "__main__":
    main()
