"""Benchmark: what the depth profile adds to one measurement.

A `GradWatch` measurement (gradient norms, on a probe batch of 16 rows, as
the callback takes it) of a 20-layer MLP (32 units per layer), with and
without the depth profile (`measurement._measure(..., depth=...)`), the two
variants interleaved round by round so that both see the same machine
load; the ratio is the median of the per-round ratios (target: at most
1.10), in wall-clock time and in the process's CPU time (steadier when
other processes share the machine). A second case measures a wider batch (256 rows), where the per-row
norms cost the most.

Usage:

    python benchmarks/bench_depth.py [--quick]
"""

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEPTH, UNITS, FEATURES = 20, 32, 20


def _model(keras):
    model = keras.Sequential(
        [keras.Input((FEATURES,))]
        + [keras.layers.Dense(UNITS, activation="relu", kernel_initializer="he_normal")
           for _ in range(DEPTH - 1)]
        + [keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy")
    return model


def _timed(function, repeats):
    """`(wall seconds, process CPU seconds)` per call."""
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeats):
        function()
    return ((time.perf_counter() - start) / repeats, (time.process_time() - cpu) / repeats)


def measure_ratio(rows, rounds, repeats):
    """`(seconds without, seconds with, median ratio, median CPU ratio)`
    for one batch size."""
    import keras
    import numpy as np

    from keras_gradwatch import measurement

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, FEATURES)).astype("float32")
    y = (x[:, :10].sum(axis=1) > 0).astype("float32")
    model = _model(keras)

    def once(depth):
        return lambda: measurement._measure(
            model, x, y, loss=None, loss_steps="last", window=None, threshold=0.01,
            tolerance=0.05, gradient_norms=True, profiles=None, depth=depth,
        )

    without, with_depth = once(False), once(True)
    without()
    with_depth()  # trace both first
    pairs = []
    for i in range(rounds):
        # Interleaved, and alternating which goes first.
        if i % 2:
            b = _timed(with_depth, repeats)
            a = _timed(without, repeats)
        else:
            a = _timed(without, repeats)
            b = _timed(with_depth, repeats)
        pairs.append((a, b))
    return (statistics.median(a[0] for a, _ in pairs),
            statistics.median(b[0] for _, b in pairs),
            statistics.median(b[0] / a[0] for a, b in pairs),
            statistics.median(b[1] / a[1] for a, b in pairs))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args(argv)
    rounds, repeats = (5, 5) if args.quick else (41, 20)
    print(f"{DEPTH}-layer MLP ({UNITS} units), {rounds} rounds of {repeats} measurements")
    results = {}
    for rows in (16, 256):
        without, with_depth, ratio, cpu_ratio = measure_ratio(rows, rounds, repeats)
        results[rows] = ratio
        print(f"probe batch {rows:>3} rows: without depth {without * 1e3:.2f} ms, "
              f"with depth {with_depth * 1e3:.2f} ms, ratio {ratio:.3f} (target <= 1.10), "
              f"CPU-time ratio {cpu_ratio:.3f}")
    return results


if __name__ == "__main__":
    main()
