"""Benchmark: memory of truncated BPTT on a very long stream.

Sixteen noisy sine streams are generated on the fly by a `tf.data`
pipeline, one 1,000-step chunk of every stream per batch (`reset="epoch"`:
row i of a batch continues row i of the batch before), and a stateful
LSTM(32) trains on them with `TruncatedBPTT(window=50)` and `GradWatch`
attached. Nothing holds the whole stream: memory should not grow with it.

Each length runs in its own process; the script prints the peak resident
memory of each and their ratio (target: 1,000,000 steps within 1.25x of
10,000 steps).

Usage:

    python benchmarks/bench_stream.py [--quick]
"""

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak_rss  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

STREAMS, CHUNK, WINDOW = 16, 1000, 50


def stream_dataset(length, streams=STREAMS, chunk=CHUNK):
    """Batches `(x, y)` of `chunk` steps of every stream, made on the fly.

    Stream i is a sum of three sines with fixed periods and phases, plus
    deterministic pseudo-noise; `y` is the next value of `x`.
    """
    import tensorflow as tf

    periods = tf.constant([[20.0 + 7 * i, 90.0 + 13 * i, 300.0 + 29 * i] for i in range(streams)])
    phases = tf.constant([[0.3 * i, 1.1 * i, 2.3 * i] for i in range(streams)])

    def chunk_of(j):
        t = tf.cast(j * chunk + tf.range(chunk + 1, dtype="int64"), "float32")[None, :, None]
        signal = tf.reduce_sum(
            tf.sin(2 * math.pi * t / periods[:, None, :] + phases[:, None, :]), axis=-1
        ) / 3
        noise = 0.1 * tf.sin(t[..., 0] * 12.9898 + tf.range(streams, dtype="float32")[:, None] * 78.233)
        series = signal + noise
        return series[:, :-1, None], series[:, 1:, None]

    return tf.data.Dataset.range(length // chunk).map(chunk_of).prefetch(2)


def run(length):
    """Trains over one stream of `length` steps; returns memory figures."""
    import keras

    from keras_gradwatch import GradWatch
    from keras_gradwatch import TruncatedBPTT

    keras.utils.set_random_seed(0)
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(STREAMS, None, 1)),
            keras.layers.LSTM(32, stateful=True, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    model = TruncatedBPTT(inner, window=WINDOW, reset="epoch")
    model.compile(optimizer="adam", loss="mse")
    start = time.perf_counter()
    with peak_rss() as figures, tempfile.TemporaryDirectory() as folder:
        history = model.fit(
            stream_dataset(length), epochs=1, verbose=0,
            callbacks=[GradWatch(folder, plots=None)],
        )
    seconds = time.perf_counter() - start
    return {
        "length": length,
        "seconds": seconds,
        "baseline_mb": figures["baseline"] / 2**20,
        "peak_mb": figures["peak"] / 2**20,
        "loss": float(history.history["loss"][-1]),
    }


def measure_in_subprocess(length):
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(length)],
        check=True, capture_output=True, text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 steps")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(run(args.child)))
        return None
    long = 200_000 if args.quick else 1_000_000
    short = measure_in_subprocess(10_000)
    longer = measure_in_subprocess(long)
    ratio = longer["peak_mb"] / short["peak_mb"]
    for r in (short, longer):
        print(
            f"{r['length']:>9,} steps: {r['seconds']:.1f} s, peak RSS "
            f"{r['peak_mb']:.0f} MB (baseline {r['baseline_mb']:.0f} MB, "
            f"+{r['peak_mb'] - r['baseline_mb']:.0f} MB), final loss {r['loss']:.4f}"
        )
    print(f"peak memory ratio {long:,} / 10,000 steps = {ratio:.3f} (target <= 1.25)")
    return ratio


if __name__ == "__main__":
    main()
