"""Benchmark of `keras_gradwatch.measure` against a training step.

One measurement of a 32 x 1000 batch through an LSTM(64) + Dense(1) model,
divided by one training step on the same batch (target: at most 3x). Three
cases, each timed interleaved with its training step, median of the
per-round ratios:

- `keras_gradwatch.layers.LSTM` (state probes inside the recurrence)
  against `train_on_batch` (full BPTT over the 1000 steps);
- a stock `keras.layers.LSTM` (input probes) against `train_on_batch`;
- a stateful `keras_gradwatch.layers.LSTM` in `TruncatedBPTT(window=50)`
  against one `TruncatedBPTT` training step (20 windows).

Usage:

    python benchmarks/bench_measure.py [--quick]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH, UNITS, FEATURES = 32, 64, 2


def _model(keras, lstm, stateful=False):
    return keras.Sequential(
        [
            keras.Input(batch_shape=(BATCH, None, FEATURES)),
            lstm(UNITS, stateful=stateful, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )


def _ratio(measure_once, train_once, rounds):
    measure_once()
    train_once()  # trace both first
    pairs = []
    for _ in range(rounds):
        start = time.perf_counter()
        measure_once()
        middle = time.perf_counter()
        train_once()
        pairs.append((middle - start, time.perf_counter() - middle))
    measured = statistics.median(m for m, _ in pairs)
    trained = statistics.median(t for _, t in pairs)
    return measured, trained, statistics.median(m / t for m, t in pairs)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T=200, 2 rounds")
    args = parser.parse_args(argv)
    import keras
    import numpy as np

    from keras_gradwatch import TruncatedBPTT
    from keras_gradwatch import layers
    from keras_gradwatch import measure

    keras.utils.set_random_seed(0)
    length = 200 if args.quick else 1000
    rounds = 2 if args.quick else 7
    rng = np.random.default_rng(0)
    x = rng.normal(size=(BATCH, length, FEATURES)).astype("float32")
    y = (np.cumsum(x[..., :1], axis=1) / np.sqrt(length)).astype("float32")
    print(f"batch {BATCH} x T={length}, LSTM({UNITS}) + Dense(1), {rounds} rounds")

    cases = []
    for label, lstm in (("keras_gradwatch.layers.LSTM", layers.LSTM), ("keras.layers.LSTM", keras.layers.LSTM)):
        model = _model(keras, lstm)
        model.compile(optimizer="adam", loss="mse")
        cases.append(
            (
                f"{label}, vs train_on_batch",
                lambda model=model: measure(model, x, y),
                lambda model=model: model.train_on_batch(x, y),
            )
        )
    wrapped = TruncatedBPTT(_model(keras, layers.LSTM, stateful=True), window=50)
    wrapped.compile(optimizer="adam", loss="mse")
    cases.append(
        (
            "TruncatedBPTT(window=50), vs one fit step",
            lambda: measure(wrapped, x, y),
            lambda: wrapped.train_on_batch(x, y),
        )
    )
    for label, measure_once, train_once in cases:
        measured, trained, ratio = _ratio(measure_once, train_once, rounds)
        print(
            f"{label}: measure {measured * 1000:.0f} ms, training step "
            f"{trained * 1000:.0f} ms, ratio {ratio:.2f} (target <= 3)"
        )


if __name__ == "__main__":
    main()
