"""Benchmark of `GradWatch`'s overhead on `fit`, in one process.

1. The every-step `grad_norm` GradWatch adds to a plain model's compiled
   train step: fit time of a model whose train step computes it divided by
   that of the same model without (target: at most 1.02).
2. Fit time with `GradWatch` at default settings divided by fit time without
   it (target: at most 1.03), for a plain `LSTM(64)` model (T=100, batch 32)
   and a stateful `LSTM(64)` under `TruncatedBPTT(window=50)` (T=500,
   batch 32). The watched side includes everything GradWatch does: tracing
   its measurement, the measurements, the records, and the drawing of the
   plots and report (by the budget during training, the rest as at the end
   of the process).

Two models are built alike (same seed) and trained for the same epochs, one
`fit(epochs=1)` call at a time, alternating between the two (and which goes
first): the machine's speed drifts by tens of percent over minutes, and
alternating epochs exposes both sides to the same drift. Both sides include
their tracing (the first epoch). Printed: the ratio of total times, the
median of the per-epoch ratios, and for (2) the time spent inside GradWatch.
`benchmarks/bench_real_usage.py` times whole processes instead.

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


def _alternate(epochs, first, second):
    """Times `first()` and `second()` epoch by epoch, ABBA; returns both lists."""
    times_first, times_second = [], []
    for epoch in range(epochs):
        if epoch % 2:
            times_second.append(second())
            times_first.append(first())
        else:
            times_first.append(first())
            times_second.append(second())
    return times_first, times_second


def _ratios(without, with_):
    return (
        sum(with_) / sum(without),
        statistics.median(w / o for w, o in zip(with_, without)),
    )


def bench_grad_norm(case):
    """The cost of the grad_norm GradWatch adds to a plain train step."""
    from keras_gradwatch.core import _train_step

    name, build, x, y, epochs = case
    plain, hooked = build(), build()
    hooked.make_train_function()
    _train_step.log_grad_norm(hooked)
    without, with_ = _alternate(
        epochs,
        lambda: _timed_fit(plain, x, y, []),
        lambda: _timed_fit(hooked, x, y, []),
    )
    total, median = _ratios(without, with_)
    print(
        f"grad_norm in the train step of a {name}: {epochs} epochs, "
        f"{sum(without):.1f} s without, {sum(with_):.1f} s with; step overhead "
        f"ratio {total:.3f} (target <= 1.02), median per-epoch ratio {median:.3f}"
    )


def bench_gradwatch(case, folder):
    from keras_gradwatch import GradWatch

    name, build, x, y, epochs = case
    plain, watched = build(), build()
    watch = GradWatch(folder)
    # Every hook Keras calls (measuring, checking, recording and drawing at
    # the end of a fit happen inside them), and `draw()`.
    timer = _Timer(watch, [n for n in dir(watch) if n.startswith("on_")] + ["draw"])
    without, with_ = _alternate(
        epochs,
        lambda: _timed_fit(plain, x, y, []),
        lambda: _timed_fit(watched, x, y, [watch]),
    )
    # What the end of the process does: draw what the budget deferred.
    start = time.perf_counter()
    watch._engine.run.drawing.at_exit()
    drawing = time.perf_counter() - start
    with_[-1] += drawing
    timer.seconds += drawing
    total, median = _ratios(without, with_)
    summary = watch.summary()
    print(
        f"{name}: {epochs} epochs, {sum(without):.1f} s without, "
        f"{sum(with_):.1f} s with ({summary['measurements']} measurements, "
        f"drawing at exit {drawing:.2f} s); overhead ratio {total:.3f} (target "
        f"<= 1.03), median per-epoch ratio {median:.3f}; time inside "
        f"GradWatch {100 * timer.seconds / sum(with_):.2f} % of the watched fits"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short fits")
    parser.add_argument("--epochs", type=int, default=None)
    args = parser.parse_args(argv)

    epochs = args.epochs or (2 if args.quick else 24)
    # Full size: 24 epochs of about 4 s per side and case, so that one
    # training lasts about a minute and a half.
    scale = 1 if args.quick else 40
    plain_case = _case("plain LSTM(64), T=100", 100, 32 * 8 * scale, epochs, wrapped=False)
    cases = [
        plain_case,
        _case("TruncatedBPTT LSTM(64), T=500, window 50", 500, 32 * 2 * scale, epochs, wrapped=True),
    ]
    bench_grad_norm(plain_case)
    folder = tempfile.mkdtemp(prefix="gradwatch-bench-")
    try:
        for index, case in enumerate(cases):
            bench_gradwatch(case, os.path.join(folder, str(index)))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
