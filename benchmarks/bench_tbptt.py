"""Benchmark of `TruncatedBPTT` against what Keras users do today.

Prints ratios measured in one run (absolute times on a shared machine mean
little):

- speed: (a) the manual loop a Keras user writes today (stateful LSTM(64),
  batch 32, T=1000, window 50: `reset_state` then `train_on_batch` per
  window), (b) `TruncatedBPTT.fit`, (c) plain `fit` over the same windows
  pre-cut into independent samples (no state). Targets: b/a <= 0.5,
  b/c <= 0.8. For reference, also (a') the manual loop with the LSTM built
  `unroll=True` for windows of 50 (the fastest loop a user can write by
  hand; `TruncatedBPTT` unrolls its windows itself) and the floor (the
  rolled-up model's forward and backward pass alone). All run interleaved,
  round after round, and each ratio is the median of the per-round ratios.
- speed-char: the character-level language model of a user's report
  (Embedding(96, 64), stateful LSTM(128), Dense(96) logits, sparse
  categorical crossentropy, Adam, batch 32) on a 96-symbol text laid out
  by `make_streams` (32 streams, 500 characters per batch row), windows of
  100 and of 20 steps, `reset="epoch"`: (a) the manual loop (`reset_state`
  at the epoch start, then `train_on_batch` per window), (b)
  `TruncatedBPTT.fit` and (b') the same with `unroll=False`, and the floor:
  the model's forward pass, backward pass and Adam update per window, the
  whole epoch in one `tf.function` (no per-window dispatch, nothing else),
  LSTM rolled and unrolled, the faster of the two per round. Epoch times,
  interleaved ABBA; wall and CPU (process) time ratios. Target: b/a <= 0.8.
- memory: peak resident memory added by one epoch of TBPTT at T=16000 and at
  T=1000, each size in its own process. Target: within 1.25x.
- compile: first epoch minus a later epoch (trace and compile overhead) with
  320 and with 20 windows per batch, each in its own process. Target: within
  1.5x.

Usage:

    python benchmarks/bench_tbptt.py            # everything
    python benchmarks/bench_tbptt.py speed      # one part (speed, speed-char,
                                                # memory, compile)
    python benchmarks/bench_tbptt.py --quick    # small sizes, for a smoke test
"""

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import peak_rss  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

BATCH, UNITS, WINDOW, FEATURES = 32, 64, 50, 2


def _setup():
    import keras

    keras.utils.set_random_seed(0)
    return keras


def _data(num_sequences, length, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_sequences, length, FEATURES)).astype("float32")
    y = (np.cumsum(x[..., :1], axis=1) / np.sqrt(length)).astype("float32")
    return x, y


def _inner(keras, stateful=True, steps=None, unroll=False):
    return keras.Sequential(
        [
            keras.Input(batch_shape=(BATCH if stateful else None, steps, FEATURES)),
            keras.layers.LSTM(
                UNITS, stateful=stateful, return_sequences=True, unroll=unroll
            ),
            keras.layers.Dense(1),
        ]
    )


def speed(length, batches, rounds):
    """Times (a), (b), (c) interleaved; returns per-window milliseconds."""
    keras = _setup()
    import numpy as np

    from keras_gradwatch import TruncatedBPTT

    x, y = _data(BATCH * batches, length)
    count = length // WINDOW

    def manual_loop(model):
        model.compile(optimizer="adam", loss="mse")
        rnn = model.layers[0]

        def run():
            for b in range(batches):
                rows = slice(b * BATCH, (b + 1) * BATCH)
                rnn.reset_state()
                for w in range(count):
                    steps = slice(w * WINDOW, (w + 1) * WINDOW)
                    model.train_on_batch(x[rows, steps], y[rows, steps])

        return run

    run_manual = manual_loop(_inner(keras))
    run_manual_unrolled = manual_loop(_inner(keras, steps=WINDOW, unroll=True))

    tbptt = TruncatedBPTT(_inner(keras), window=WINDOW)
    tbptt.compile(optimizer="adam", loss="mse")

    def run_tbptt():
        tbptt.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)

    plain = _inner(keras, stateful=False)
    plain.compile(optimizer="adam", loss="mse")
    # Window-major order: window w of every sequence, then window w + 1.
    cut_x = np.concatenate([x[:, w * WINDOW : (w + 1) * WINDOW] for w in range(count)])
    cut_y = np.concatenate([y[:, w * WINDOW : (w + 1) * WINDOW] for w in range(count)])

    def run_plain():
        plain.fit(cut_x, cut_y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False)

    # The floor: the model's own forward and backward pass over the windows,
    # compiled, with no optimizer, loss bookkeeping or state handling.
    import tensorflow as tf

    bare = _inner(keras, stateful=False)
    windows_x = tf.constant(cut_x[:BATCH])
    windows_y = tf.constant(cut_y[:BATCH])

    @tf.function
    def forward_backward(x, y):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean((bare(x, training=True) - y) ** 2)
        return tape.gradient(loss, bare.trainable_variables)

    def run_floor():
        for _ in range(batches * count):
            forward_backward(windows_x, windows_y)

    runs = {
        "a_manual": run_manual,
        "a_unrolled": run_manual_unrolled,
        "b_tbptt": run_tbptt,
        "c_plain": run_plain,
        "floor": run_floor,
    }
    for run in runs.values():  # trace and warm up
        run()
    times = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    windows = batches * count
    return {
        "per_window_ms": {
            name: 1000 * statistics.median(t) / windows for name, t in times.items()
        },
        "b/a": statistics.median(
            b / a for b, a in zip(times["b_tbptt"], times["a_manual"])
        ),
        "b/c": statistics.median(
            b / c for b, c in zip(times["b_tbptt"], times["c_plain"])
        ),
        "b/a_unrolled": statistics.median(
            b / a for b, a in zip(times["b_tbptt"], times["a_unrolled"])
        ),
        "floor/a": statistics.median(
            f / a for f, a in zip(times["floor"], times["a_manual"])
        ),
    }


# Character-level language model (the case of the issue that found the
# wrapper no faster than the manual loop): 96 symbols, window 100 and 20.
CHAR_SYMBOLS = [chr(c) for c in range(32, 127)] + ["\n"]  # 96 symbols
CHAR_EMBED, CHAR_UNITS, CHAR_CHUNK = 64, 128, 500
CHAR_WINDOWS = (100, 20)


def _char_streams(chars):
    """`make_streams` over a 96-symbol text (the stdlib's Python files)."""
    import numpy as np
    from bench_real_usage import stdlib_text

    from keras_gradwatch.streams import make_streams

    index = {c: i for i, c in enumerate(CHAR_SYMBOLS)}
    unknown = index["?"]
    ids = np.array([index.get(c, unknown) for c in stdlib_text(chars)], "int32")
    return make_streams(ids, batch_size=BATCH, chunk=CHAR_CHUNK)


def _char_inner(keras, unroll=False):
    keras.utils.set_random_seed(0)  # the same initial weights for every variant
    return keras.Sequential(
        [
            keras.Input(batch_shape=(BATCH, None), dtype="int32"),
            keras.layers.Embedding(len(CHAR_SYMBOLS), CHAR_EMBED),
            keras.layers.LSTM(
                CHAR_UNITS, stateful=True, return_sequences=True, unroll=unroll
            ),
            keras.layers.Dense(len(CHAR_SYMBOLS)),
        ]
    )


def speed_char(window, chars, rounds):
    """Epoch times of a char-level LSTM language model, variants interleaved.

    (a) the manual loop, (b) `TruncatedBPTT(reset="epoch")` (`unroll="auto"`)
    and (b') the same with `unroll=False`, and the floor: the model's
    forward pass, backward pass and Adam update per window, the whole epoch
    in one `tf.function` (a symbolic loop over the windows, state carried,
    nothing else), with the LSTM rolled and unrolled; the floor of a round
    is the faster of the two. Wall and CPU (process) time are both kept:
    other jobs on a shared machine blur the second less.
    """
    keras = _setup()
    import tensorflow as tf

    from keras_gradwatch import TruncatedBPTT

    x, y = _char_streams(chars)
    batches, per_chunk = len(x) // BATCH, CHAR_CHUNK // window
    count = batches * per_chunk

    def loss():
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def manual_loop():
        model = _char_inner(keras)
        model.compile(optimizer="adam", loss=loss())

        def run(batches=batches):
            model.layers[1].reset_state()
            for b in range(batches):
                rows = slice(b * BATCH, (b + 1) * BATCH)
                for w in range(per_chunk):
                    steps = slice(w * window, (w + 1) * window)
                    model.train_on_batch(x[rows, steps], y[rows, steps])

        return run

    class EpochTimer(keras.callbacks.Callback):
        """The epoch's time inside `fit` (as the issue compared epochs)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.wall, self.cpu = time.perf_counter(), time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            self.wall = time.perf_counter() - self.wall
            self.cpu = time.process_time() - self.cpu

    def wrapper(unroll):
        model = TruncatedBPTT(_char_inner(keras), window, reset="epoch", unroll=unroll)
        model.compile(optimizer="adam", loss=loss())
        timer = EpochTimer()

        def run(batches=batches):
            rows = slice(0, batches * BATCH)
            model.fit(x[rows], y[rows], batch_size=BATCH, epochs=1, verbose=0, callbacks=[timer])
            return timer.wall, timer.cpu

        return run

    # Windows in training order, (count, batch, window): batch b's window w
    # is window b * per_chunk + w.
    def by_window(a):
        a = a.reshape(batches, BATCH, per_chunk, window).transpose(0, 2, 1, 3)
        return tf.constant(a.reshape(count, BATCH, window))

    windows_x, windows_y = by_window(x), by_window(y)

    def floor(unroll):
        model = _char_inner(keras, unroll=unroll)
        optimizer = keras.optimizers.Adam()
        optimizer.build(model.trainable_variables)
        loss_fn = loss()
        spec = tf.TensorSpec((None, BATCH, window), "int32")

        @tf.function(input_signature=[spec, spec])
        def epoch(xs, ys):
            def body(i):
                with tf.GradientTape() as tape:
                    step_loss = loss_fn(ys[i], model(xs[i], training=True))
                grads = tape.gradient(step_loss, model.trainable_variables)
                optimizer.apply(grads, model.trainable_variables)
                return (i + 1,)

            tf.while_loop(lambda i: i < tf.shape(xs)[0], body, [tf.constant(0)], parallel_iterations=1)

        def run(batches=batches):
            model.layers[1].reset_state()
            epoch(windows_x[: batches * per_chunk], windows_y[: batches * per_chunk])

        return run

    runs = {
        "a_manual": manual_loop(),
        "b_tbptt": wrapper("auto"),
        "b_rolled": wrapper(False),
        "floor_rolled": floor(False),
        "floor_unrolled": floor(True),
    }
    for run in runs.values():  # trace and warm up on two batches
        run(batches=min(2, batches))
    wall = {name: [] for name in runs}
    cpu = {name: [] for name in runs}
    for r in range(rounds):
        # ABBA: the order turns round every other round, against drift.
        for name in list(runs)[:: 1 if r % 2 == 0 else -1]:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            inside = runs[name]()
            took = (time.perf_counter() - start_wall, time.process_time() - start_cpu)
            took = inside or took  # fit: the epoch alone, as timed inside it
            wall[name].append(took[0])
            cpu[name].append(took[1])

    def ratios(times):
        floor_t = [min(r, u) for r, u in zip(times["floor_rolled"], times["floor_unrolled"])]

        def median(p, q):
            return statistics.median(u / v for u, v in zip(p, q))

        return {
            "b/a": median(times["b_tbptt"], times["a_manual"]),
            "b/floor": median(times["b_tbptt"], floor_t),
            "a/floor": median(times["a_manual"], floor_t),
            "b_rolled/b": median(times["b_rolled"], times["b_tbptt"]),
            "floor_unrolled/floor_rolled": median(
                times["floor_unrolled"], times["floor_rolled"]
            ),
        }

    return {
        "window": window,
        "windows": count,
        "chars": len(x) * CHAR_CHUNK,
        "per_window_ms": {
            name: 1000 * statistics.median(t) / count for name, t in wall.items()
        },
        "wall": ratios(wall),
        "cpu": ratios(cpu),
    }


def memory(length):
    """Peak resident memory added by one epoch of TBPTT (own process)."""
    keras = _setup()
    from keras_gradwatch import TruncatedBPTT

    x, y = _data(BATCH, length)
    model = TruncatedBPTT(_inner(keras), window=WINDOW)
    model.compile(optimizer="adam", loss="mse")
    # Trace on a short batch first, so the measured epoch holds no tracing.
    model.fit(x[:, :WINDOW * 2], y[:, :WINDOW * 2], epochs=1, verbose=0)
    with peak_rss() as figures:
        model.fit(x, y, epochs=1, verbose=0)
    return {
        "length": length,
        "baseline_mb": figures["baseline"] / 2**20,
        "added_mb": (figures["peak"] - figures["baseline"]) / 2**20,
    }


def compile_overhead(windows):
    """First epoch minus the fastest later epoch (own process)."""
    keras = _setup()
    from keras_gradwatch import TruncatedBPTT

    x, y = _data(BATCH, windows * WINDOW)
    model = TruncatedBPTT(_inner(keras), window=WINDOW)
    model.compile(optimizer="adam", loss="mse")
    epochs = []
    for _ in range(3):
        start = time.perf_counter()
        model.fit(x, y, epochs=1, verbose=0)
        epochs.append(time.perf_counter() - start)
    return {"windows": windows, "first_s": epochs[0], "later_s": min(epochs[1:]), "overhead_s": epochs[0] - min(epochs[1:])}


# Side by side with PyTorch (`versus`) and the first epoch's extra cost
# (`wall`): the set-up, 128 sequences of T=1000 steps, 8 features,
# batch 32, Adam (lr 1e-3), MSE; each measurement in a fresh process.
VERSUS_SEQUENCES, VERSUS_LENGTH, VERSUS_FEATURES = 128, 1000, 8
VERSUS = (("lstm", 8, 50), ("lstm", 64, 50), ("lstm", 256, 50), ("gru", 64, 50), ("lstm", 64, 100))
WALL = tuple((kind, 64, window) for kind in ("lstm", "gru") for window in (20, 50, 100))
# After `load_model`, and after a change from this window to half of it.
WALL_AFTER = (("lstm", 64, 50), ("gru", 64, 50), ("gru", 64, 100))
# How the Keras side runs: TruncatedBPTT with its defaults, forced paths,
# or plain `fit` of the stateless model over the windows pre-cut.
VARIANTS = {
    "tbptt": {},
    "fused": {"recurrence": "fused"},
    "unrolled": {"recurrence": "stock", "unroll": True},
    "loop": {"recurrence": "stock", "unroll": False},
}


def _versus_data(np):
    rng = np.random.default_rng(0)
    shape = (VERSUS_SEQUENCES, VERSUS_LENGTH, VERSUS_FEATURES)
    x = rng.normal(size=shape).astype("float32")
    y = (np.cumsum(x[..., :1], axis=1) / np.sqrt(VERSUS_LENGTH)).astype("float32")
    return x, y


def _cut(np, x, window):
    """The sequences cut into windows, window-major: window w of every
    batch of sequences, then w + 1 (the plain fit's data)."""
    count = x.shape[1] // window
    return np.concatenate([x[:, w * window : (w + 1) * window] for w in range(count)])


def keras_epochs(kind, units, window, variant, epochs, case="fresh"):
    """Seconds of each of `epochs` epochs of one `fit` call, timed inside
    `fit` (own process: the first one pays every trace), and of the whole
    call (`fit_s`: the epochs and `fit`'s set-up, 30-90 ms here).

    `case`: `"fresh"` (a new model), `"loaded"` (a model trained one epoch,
    saved to a `.keras` file and loaded with `keras.models.load_model`) or
    `"rewindowed"` (a model trained two epochs at `window`, then timed at
    half of it: `window="auto"` changes the window so, between steps).
    """
    keras = _setup()
    import tempfile

    import numpy as np

    from keras_gradwatch import TruncatedBPTT

    x, y = _versus_data(np)
    layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind]
    stateful = variant != "plain"
    inner = keras.Sequential(
        [
            keras.Input(batch_shape=(BATCH if stateful else None, None, VERSUS_FEATURES)),
            layer(units, stateful=stateful, return_sequences=True),
            keras.layers.Dense(1),
        ]
    )
    model = TruncatedBPTT(inner, window=window, **VARIANTS[variant]) if stateful else inner
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse")

    def data(window):
        return (x, y) if stateful else (_cut(np, x, window), _cut(np, y, window))

    def fit(model, window, epochs, callbacks=()):
        model.fit(*data(window), batch_size=BATCH, epochs=epochs, verbose=0,
                  shuffle=False, callbacks=list(callbacks))

    if case == "loaded":
        fit(model, window, 1)
        path = os.path.join(tempfile.mkdtemp(), "model.keras")
        model.save(path)
        keras.backend.clear_session()
        model = keras.models.load_model(path)
    elif case == "rewindowed":
        fit(model, window, 2)
        window //= 2
        if stateful:
            model.window = window

    class EpochTimer(keras.callbacks.Callback):
        """Each epoch's time inside `fit`, as PyTorch's epoch loop is timed
        (without `fit`'s own set-up: the data adapter, the callbacks)."""

        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.start)

    times = []
    start = time.perf_counter()
    fit(model, window, epochs, [EpochTimer()])
    fit_s = time.perf_counter() - start
    paths = model.recurrence_paths if stateful else {}
    return {"epochs_s": times, "fit_s": fit_s, "paths": paths}


# Per-window forward + backward pass of one recurrent layer (+ Dense(1)),
# batch 32, 8 features, by path: the measurements behind
# `recurrence="auto"` (`_fused.FUSED_MAX_UNITS`) and `unroll="auto"`
# (`_windows.AUTO_UNROLL_STEPS`).
PATHS = (
    ("lstm", 8, 50), ("lstm", 64, 20), ("lstm", 64, 50), ("lstm", 96, 50),
    ("lstm", 128, 50), ("lstm", 192, 50), ("lstm", 256, 50), ("lstm", 64, 100),
    ("gru", 64, 20), ("gru", 64, 50), ("gru", 64, 100),
)


def _forward_backward(tf, layer, dense):
    # The weights are closed over (as arguments of a tf.function they would
    # be placeholders, apart from the ones the layers read).
    weights = layer.trainable_variables + dense.trainable_variables

    def step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(dense(layer(x)) ** 2)
        return tape.gradient(loss, weights)

    return step


def path_times(kind, units, window, repeats):
    """Trace seconds and median ms per window of each path of one layer."""
    keras = _setup()
    import numpy as np
    import tensorflow as tf

    from keras_gradwatch.core import _compat
    from keras_gradwatch.tbptt import _fused

    paths = ("loop", "unrolled", "fused") if kind == "lstm" else ("loop", "unrolled")
    x = tf.constant(np.random.default_rng(0).normal(size=(BATCH, window, VERSUS_FEATURES)),
                    "float32")
    functions = {}
    row = {}
    for path in paths:
        layer = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}[kind](
            units, return_sequences=True, unroll=path == "unrolled"
        )
        dense = keras.layers.Dense(1)
        dense(layer(x))
        if path == "fused":
            _compat.shadow_inner_loop(layer, _fused.fused_inner_loop(layer))
        functions[path] = tf.function(_forward_backward(tf, layer, dense))
        start = time.perf_counter()
        functions[path](x)
        row[path + "_trace_s"] = time.perf_counter() - start
    times = {path: [] for path in paths}
    for _ in range(repeats):  # interleaved
        for path in paths:
            start = time.perf_counter()
            [g.numpy() for g in functions[path](x)]
            times[path].append(time.perf_counter() - start)
    for path in paths:
        row[path + "_ms"] = 1000 * statistics.median(times[path])
    return row


def _torch_python():
    """An interpreter that imports torch: `$TORCH_PYTHON`, or this one."""
    for python in (os.environ.get("TORCH_PYTHON"), sys.executable):
        if python and subprocess.run(
            [python, "-c", "import torch"], capture_output=True
        ).returncode == 0:
            return python
    return None


def _epochs(side, kind, units, window, variant, epochs, case="fresh"):
    if side == "torch":
        command = [
            _torch_python(),
            os.path.join(os.path.dirname(os.path.abspath(__file__)), "_torch_tbptt.py"),
            kind, str(units), str(window), str(epochs),
        ]
    else:
        command = [sys.executable, __file__, "_child", "epochs",
                   f"{kind}:{units}:{window}:{variant}:{epochs}:{case}"]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _first_and_later(runs):
    """Median first epoch and median later epoch over the runs (seconds)."""
    first = statistics.median(r["epochs_s"][0] for r in runs)
    later = statistics.median(t for r in runs for t in r["epochs_s"][1:])
    return first, later


def versus_rows(rounds, epochs, configs=VERSUS, variant="tbptt"):
    """`TruncatedBPTT` and PyTorch on the same work, interleaved per round.

    Returns one row per configuration: first and later epochs of each side,
    and the median of the per-round ratios of later epochs.
    """
    torch = _torch_python() is not None
    rows = []
    for kind, units, window in configs:
        runs = {"keras": [], "torch": []}
        for _ in range(rounds):
            runs["keras"].append(_epochs("keras", kind, units, window, variant, epochs))
            if torch:
                runs["torch"].append(_epochs("torch", kind, units, window, None, epochs))
        row = {"layer": f"{kind.upper()}({units})", "window": window,
               "paths": runs["keras"][0]["paths"]}
        row["keras_first"], row["keras_later"] = _first_and_later(runs["keras"])
        if torch:
            row["torch_first"], row["torch_later"] = _first_and_later(runs["torch"])
            row["ratio"] = statistics.median(
                statistics.median(k["epochs_s"][1:]) / statistics.median(t["epochs_s"][1:])
                for k, t in zip(runs["keras"], runs["torch"])
            )
            # Other jobs on the machine slow PyTorch's threads most (up to
            # 40x at load 2-3 here): the fastest later epochs of each side
            # are the least disturbed.
            row["keras_best"], row["torch_best"] = (
                min(t for r in runs[side] for t in r["epochs_s"][1:]) for side in ("keras", "torch")
            )
            row["best_ratio"] = row["keras_best"] / row["torch_best"]
        rows.append(row)
    return rows


def wall_rows(rounds, epochs, configs=WALL, case="fresh"):
    """First-epoch extra (first minus later epoch) of `TruncatedBPTT` and of
    plain `fit` over the windows pre-cut, interleaved per round (`case`:
    see `keras_epochs`)."""
    rows = []
    for kind, units, window in configs:
        extra = {}
        for variant in ("tbptt", "plain"):
            runs = [_epochs("keras", kind, units, window, variant, epochs, case)
                    for _ in range(rounds)]
            extra[variant] = [r["epochs_s"][0] - statistics.median(r["epochs_s"][1:]) for r in runs]
            extra[variant + "_later"] = statistics.median(
                t for r in runs for t in r["epochs_s"][1:]
            )
            if variant == "tbptt":
                extra["paths"] = runs[0]["paths"]
        timed = window // 2 if case == "rewindowed" else window
        rows.append({"layer": f"{kind.upper()}({units})", "window": timed, **extra})
    return rows


def _child(part, value):
    out = subprocess.run(
        [sys.executable, __file__, "_child", part, str(value)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "part", nargs="?", default="all",
        choices=["all", "speed", "speed-char", "memory", "compile", "versus", "wall",
                 "wall-after", "paths", "_child"],
    )
    parser.add_argument("args", nargs="*")
    parser.add_argument("--quick", action="store_true", help="small sizes")
    args = parser.parse_args(argv)
    if args.part == "_child":
        kind, value = args.args
        if kind == "paths":
            kind, units, window, repeats = value.split(":")
            print(json.dumps(path_times(kind, int(units), int(window), int(repeats))))
            return
        if kind == "epochs":
            kind, units, window, variant, epochs, case = value.split(":")
            print(json.dumps(keras_epochs(kind, int(units), int(window), variant, int(epochs), case)))
            return
        fn = memory if kind == "memory" else compile_overhead
        print(json.dumps(fn(int(value))))
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cpus, Python {platform.python_version()}")
    import keras
    import tensorflow as tf

    print(f"tensorflow {tf.__version__}, keras {keras.__version__}")
    long_t, short_t = (2000, 500) if args.quick else (16000, 1000)
    many, few = (40, 10) if args.quick else (320, 20)
    if args.part in ("all", "speed"):
        s = speed(
            length=500 if args.quick else 1000,
            batches=2 if args.quick else 4,
            rounds=2 if args.quick else 5,
        )
        ms = s["per_window_ms"]
        print(
            "speed, ms per window: (a) manual {:.2f}, (b) TruncatedBPTT {:.2f}, "
            "(c) plain fit {:.2f}".format(ms["a_manual"], ms["b_tbptt"], ms["c_plain"])
        )
        print(
            f"speed, for reference: (a') manual loop, unrolled LSTM {ms['a_unrolled']:.2f} ms "
            f"per window (b/a' = {s['b/a_unrolled']:.3f}); floor, the rolled-up model's "
            f"forward+backward pass alone, {ms['floor']:.2f} ms per window "
            f"({s['floor/a']:.3f} of (a))"
        )
        print("speed ratio b/a = {:.3f} (target <= 0.5)".format(s["b/a"]))
        print("speed ratio b/c = {:.3f} (target <= 0.8)".format(s["b/c"]))
    if args.part in ("all", "speed-char"):
        for window in CHAR_WINDOWS:
            c = speed_char(
                window,
                chars=BATCH * CHAR_CHUNK * 2 + 1 if args.quick else 256_000,
                rounds=2 if args.quick else 5,
            )
            ms, wall, cpu = c["per_window_ms"], c["wall"], c["cpu"]
            print(
                f"char-level LM, window {window} ({c['windows']} windows, "
                f"{c['chars']} characters per epoch), ms per window: "
                f"(a) manual {ms['a_manual']:.2f}, (b) TruncatedBPTT {ms['b_tbptt']:.2f}, "
                f"(b') unroll=False {ms['b_rolled']:.2f}, floor rolled "
                f"{ms['floor_rolled']:.2f}, unrolled {ms['floor_unrolled']:.2f}"
            )
            for label, r in (("wall", wall), ("cpu", cpu)):
                print(
                    f"char-level LM, window {window}, {label} time: b/a = {r['b/a']:.3f} "
                    f"(target <= 0.8), b/floor = {r['b/floor']:.3f}, a/floor = "
                    f"{r['a/floor']:.3f}, b'/b = {r['b_rolled/b']:.3f}, floor "
                    f"unrolled/rolled = {r['floor_unrolled/floor_rolled']:.3f}"
                )
    if args.part in ("all", "versus"):
        configs = VERSUS[:1] if args.quick else VERSUS
        for row in versus_rows(rounds=1 if args.quick else 2, epochs=2 if args.quick else 5,
                          configs=configs):
            line = (
                f"versus {row['layer']} window {row['window']}: TruncatedBPTT "
                f"first {row['keras_first']:.2f} s, later {row['keras_later']:.3f} s "
                f"({', '.join(f'{k}: {v}' for k, v in row['paths'].items())})"
            )
            if "ratio" in row:
                line += (
                    f"; PyTorch first {row['torch_first']:.2f} s, later "
                    f"{row['torch_later']:.3f} s; later-epoch ratio {row['ratio']:.2f}; "
                    f"fastest later epochs {row['keras_best']:.3f} / {row['torch_best']:.3f} s, "
                    f"ratio {row['best_ratio']:.2f}"
                )
            else:
                line += "; PyTorch: not installed (set TORCH_PYTHON)"
            print(line)
    if args.part in ("all", "paths"):
        for kind, units, window in PATHS[:1] if args.quick else PATHS:
            spec = f"{kind}:{units}:{window}:{5 if args.quick else 40}"
            out = subprocess.run(
                [sys.executable, __file__, "_child", "paths", spec],
                check=True, capture_output=True, text=True,
            ).stdout
            row = json.loads(out.strip().splitlines()[-1])
            cells = ", ".join(
                f"{path} {row[path + '_ms']:.2f} ms (trace {row[path + '_trace_s']:.2f} s)"
                for path in ("loop", "unrolled", "fused") if path + "_ms" in row
            )
            print(f"paths {kind.upper()}({units}) window {window}: {cells}")
    wall_cases = [("wall", "fresh", WALL)]
    if args.part in ("all", "wall-after"):
        wall_cases = wall_cases[1:] if args.part == "wall-after" else wall_cases
        wall_cases += [("after load_model", "loaded", WALL_AFTER),
                       ("after a window change", "rewindowed", WALL_AFTER)]
    for label, case, configs in wall_cases if args.part in ("all", "wall", "wall-after") else ():
        configs = configs[:1] if args.quick else configs
        # After load_model or a window change the plain fit's extra is a
        # few tenths of a second, within the noise of one later epoch: more
        # rounds and epochs there, and each round's extra printed.
        fresh = case == "fresh"
        rounds, epochs = (1, 2) if args.quick else ((2, 3) if fresh else (3, 5))
        for row in wall_rows(rounds=rounds, epochs=epochs, configs=configs, case=case):
            t, p = statistics.median(row["tbptt"]), statistics.median(row["plain"])
            each = "; ".join(
                f"{', '.join(f'{v:.2f}' for v in row[variant])}" for variant in ("tbptt", "plain")
            )
            print(
                f"{label} {row['layer']} window {row['window']}: first-epoch extra "
                f"TruncatedBPTT {t:.2f} s ({', '.join(row['paths'].values())}), "
                f"plain fit {p:.2f} s, ratio {t / p:.2f} (target <= 1.5); later "
                f"epochs {row['tbptt_later']:.3f} / {row['plain_later']:.3f} s; "
                f"each round's extra: {each}"
            )
    if args.part in ("all", "memory"):
        big, small = _child("memory", long_t), _child("memory", short_t)
        peak_ratio = (big["baseline_mb"] + big["added_mb"]) / (
            small["baseline_mb"] + small["added_mb"]
        )
        print(
            f"memory: T={big['length']} adds {big['added_mb']:.1f} MB, "
            f"T={small['length']} adds {small['added_mb']:.1f} MB "
            f"(baseline {small['baseline_mb']:.0f} MB)"
        )
        print(f"memory ratio (peak RSS, T={long_t} / T={short_t}) = {peak_ratio:.3f} (target <= 1.25)")
    if args.part in ("all", "compile"):
        a, b = _child("compile", many), _child("compile", few)
        print(
            f"compile overhead: {a['windows']} windows {a['overhead_s']:.2f} s, "
            f"{b['windows']} windows {b['overhead_s']:.2f} s"
        )
        print(f"compile ratio = {a['overhead_s'] / b['overhead_s']:.3f} (target <= 1.5)")


if __name__ == "__main__":
    main()
