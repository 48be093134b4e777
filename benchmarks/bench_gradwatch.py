"""Benchmark of `GradWatch`'s overhead on `fit`.

Fit time with `GradWatch` at default settings divided by fit time without
it (target: at most 1.03), for

- a plain `LSTM(64)` model (T=100, batch 32), and
- a stateful `LSTM(64)` under `TruncatedBPTT(window=50)` (T=500, batch 32).

Two models are built alike (same seed), one watched, one not, and trained
for the same epochs, one `fit(epochs=1)` call at a time, alternating between
the two (and which goes first): the machine's speed drifts by tens of
percent over minutes, and alternating epochs exposes both sides to the same
drift. Both sides include
their tracing (the first epoch), and the watched side its first measurement
(before the first update, tracing its probed pass). Printed: the ratio of
total times, and the median of the per-epoch ratios.

Usage:

    python benchmarks/bench_gradwatch.py [--quick] [--epochs N]
"""

import argparse
import os
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH, UNITS, FEATURES = 32, 64, 2


def _case(name, length, sequences, epochs, wrapped):
    import keras
    import numpy as np

    from keras_gradwatch import TruncatedBPTT

    rng = np.random.default_rng(0)
    x = rng.normal(size=(sequences, length, FEATURES)).astype("float32")
    y = (np.cumsum(x[..., :1], axis=1) / np.sqrt(length)).astype("float32")

    def build():
        keras.utils.set_random_seed(0)
        inner = keras.Sequential(
            [
                keras.Input(batch_shape=(BATCH if wrapped else None, None, FEATURES)),
                keras.layers.LSTM(UNITS, stateful=wrapped, return_sequences=True),
                keras.layers.Dense(1),
            ]
        )
        model = TruncatedBPTT(inner, window=50) if wrapped else inner
        model.compile(optimizer="adam", loss="mse")
        return model

    return name, build, x, y, epochs


class _Timer:
    """Adds up the time spent inside a callback's methods (outermost calls)."""

    def __init__(self, callback, names):
        self.seconds = 0.0
        self._depth = 0
        for name in names:
            setattr(callback, name, self._timed(getattr(callback, name)))

    def _timed(self, method):
        def timed(*args, **kwargs):
            self._depth += 1
            start = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                self._depth -= 1
                if not self._depth:
                    self.seconds += time.perf_counter() - start

        return timed


def _timed_fit(model, x, y, callbacks):
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=callbacks)
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short fits")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)
    from keras_gradwatch import GradWatch

    epochs = args.epochs or (2 if args.quick else 24)
    # Full size: 24 epochs of about 4 s per side and case, so that one
    # training lasts about a minute and a half.
    scale = 1 if args.quick else 40
    cases = [
        _case("plain LSTM(64), T=100", 100, 32 * 8 * scale, epochs, wrapped=False),
        _case("TruncatedBPTT LSTM(64), T=500, window 50", 500, 32 * 2 * scale, epochs, wrapped=True),
    ]
    folder = tempfile.mkdtemp(prefix="gradwatch-bench-")
    try:
        for index, (name, build, x, y, epochs) in enumerate(cases):
            plain, watched = build(), build()
            watch = GradWatch(os.path.join(folder, str(index)))
            draw, watch._draw = watch._draw, lambda: None  # see the docstring
            timer = _Timer(
                watch,
                [name for name in dir(watch) if name.startswith("on_")] + ["_measure"],
            )
            without, with_ = [], []
            for epoch in range(epochs):
                # Which side goes first alternates too (ABBA), against order
                # effects such as one-off runtime warm-up.
                if epoch % 2:
                    with_.append(_timed_fit(watched, x, y, [watch]))
                    without.append(_timed_fit(plain, x, y, []))
                else:
                    without.append(_timed_fit(plain, x, y, []))
                    with_.append(_timed_fit(watched, x, y, [watch]))
            start = time.perf_counter()
            draw()  # what plots="end" does once at the end of training
            drawing = time.perf_counter() - start
            with_[-1] += drawing
            timer.seconds += drawing
            summary = watch.summary()
            print(
                f"{name}: {epochs} epochs, {sum(without):.1f} s without, "
                f"{sum(with_):.1f} s with ({summary['measurements']} "
                f"measurements); overhead ratio {sum(with_) / sum(without):.3f} "
                "(target <= 1.03), median per-epoch ratio "
                f"{statistics.median(w / o for w, o in zip(with_, without)):.3f}"
                f"; time inside GradWatch {100 * timer.seconds / sum(with_):.2f} % "
                "of the watched fits"
            )
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
