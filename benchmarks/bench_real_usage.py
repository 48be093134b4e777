"""Benchmark of `GradWatch` on training runs written the way people write them.

Three runs, each timed with and without `GradWatch` as a whole process (from
the start of training to the end of the process: measurements, writing,
tracing and the plots and report drawn at exit all count; nothing of the
package is stubbed out):

- (a) a keras-io style encoder-decoder LSTM (`addition_rnn.py`: LSTM(128),
  RepeatVector, LSTM(128), softmax) trained by calling `fit(epochs=1)` in a
  loop, with validation data and a new `GradWatch("runs/...")` in every
  call, as a script gets it when the callback is added to each `fit`;
- (b) one `fit` of about a minute: two stacked LSTM(64) layers on the adding
  problem (T=100, 12,800 sequences), 4 epochs;
- (c) a character-level language model under `TruncatedBPTT(window=100,
  reset="epoch")`: Embedding, stateful LSTM(128), softmax over 98
  characters, on a 2.56-million-character text stream built from the Python
  files of the standard library (32 parallel streams, 500 characters per
  batch row: 160 batches of 5 updates per epoch), 2 epochs.

Printed for each: the wall-time ratio with / without in one run (the two
sides alternate, ABBA, `--repeats` times; the ratio is of the summed times,
and the median of the ratios of the side-by-side pairs is printed too, as is
the ratio of the processes' CPU time, which other jobs on the machine blur
less), the number of measurements (and per epoch), and the alerts raised.
Targets: (a) <= 1.15, (b) and (c) <= 1.05; (a) >= 2 measurements per epoch;
(b) >= 20 measurements; no `exploding` alert in any.

Usage:

    python benchmarks/bench_real_usage.py [a b c] [--repeats N] [--quick]
"""

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

CASES = ("a", "b", "c")
TARGETS = {"a": 1.15, "b": 1.05, "c": 1.05}
TITLES = {
    "a": "(a) keras-io addition_rnn, fit(epochs=1) in a loop",
    "b": "(b) one fit of about a minute, 2 x LSTM(64), T=100",
    "c": "(c) TruncatedBPTT char-level LSTM(128) on a text stream",
}


# The training runs (each runs in a child process) ------------------------------


def _addition_data(size, seed=0):
    """keras-io addition_rnn.py's data: '535+61' -> '596', one-hot, reversed."""
    import numpy as np

    digits, chars = 3, "0123456789+ "
    maxlen = digits + 1 + digits
    index = {c: i for i, c in enumerate(chars)}
    rng = np.random.default_rng(seed)
    questions, answers, seen = [], [], set()
    while len(questions) < size:
        a, b = (int("".join(rng.choice(list("0123456789"), rng.integers(1, digits + 1))))
                for _ in range(2))
        key = tuple(sorted((a, b)))
        if key in seen:
            continue
        seen.add(key)
        query = f"{a}+{b}".ljust(maxlen)[::-1]
        questions.append(query)
        answers.append(str(a + b).ljust(digits + 1))
    x = np.zeros((size, maxlen, len(chars)), dtype=bool)
    y = np.zeros((size, digits + 1, len(chars)), dtype=bool)
    for i, (q, a) in enumerate(zip(questions, answers)):
        x[i, np.arange(maxlen), [index[c] for c in q]] = True
        y[i, np.arange(digits + 1), [index[c] for c in a]] = True
    split = size - size // 10
    return (x[:split], y[:split]), (x[split:], y[split:]), len(chars), digits


def _run_a(watch_dir, quick):
    import keras

    from keras_gradwatch import GradWatch

    (x, y), validation, vocab, digits = _addition_data(2000 if quick else 20000)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((x.shape[1], vocab)),
        keras.layers.LSTM(128),
        keras.layers.RepeatVector(digits + 1),
        keras.layers.LSTM(128, return_sequences=True),
        keras.layers.Dense(vocab, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    start = _started()
    fits = 2 if quick else 10
    for _ in range(fits):
        callbacks = [GradWatch(watch_dir)] if watch_dir else []
        model.fit(x, y, batch_size=32, epochs=1, validation_data=validation,
                  verbose=0, callbacks=callbacks)
    return start, fits


def _adding_data(count, length, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    values = rng.uniform(size=(count, length))
    markers = np.zeros((count, length))
    for row in markers:
        row[rng.choice(length, 2, replace=False)] = 1.0
    x = np.stack([values, markers], axis=-1).astype("float32")
    y = (values * markers).sum(axis=1, keepdims=True).astype("float32")
    return x, y


def _run_b(watch_dir, quick):
    import keras

    from keras_gradwatch import GradWatch

    x, y = _adding_data(512 if quick else 12800, 100)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((None, 2)),
        keras.layers.LSTM(64, return_sequences=True),
        keras.layers.LSTM(64),
        keras.layers.Dense(1),
    ])
    model.compile(optimizer="adam", loss="mse")
    start = _started()
    epochs = 1 if quick else 4
    callbacks = [GradWatch(watch_dir)] if watch_dir else []
    model.fit(x, y, batch_size=32, epochs=epochs, verbose=0, callbacks=callbacks)
    return start, epochs


def stdlib_text(size):
    """Characters of the standard library's Python files, in a fixed order."""
    root = sysconfig.get_paths()["stdlib"]
    parts, total = [], 0
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in ("site-packages", "test", "tests"))
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), encoding="utf-8", errors="replace") as f:
                    parts.append(f.read())
                total += len(parts[-1])
                if total >= size:
                    return "".join(parts)[:size]
    return "".join(parts)


def _char_streams(size, streams, chunk):
    """Token ids laid out for reset="epoch": batch j = chunk j of every stream."""
    import numpy as np

    text = stdlib_text(size)
    vocab = [chr(c) for c in range(32, 127)] + ["\n", "\t", "?"]  # 98 symbols
    index = {c: i for i, c in enumerate(vocab)}
    ids = np.array([index.get(c, len(vocab) - 1) for c in text], dtype="int32")
    length = (len(ids) - 1) // streams
    rows = ids[: length * streams + 1]
    x_streams = np.stack([rows[i * length : (i + 1) * length] for i in range(streams)])
    y_streams = np.stack([rows[i * length + 1 : (i + 1) * length + 1] for i in range(streams)])
    count = length // chunk
    x = np.concatenate([x_streams[:, j * chunk : (j + 1) * chunk] for j in range(count)])
    y = np.concatenate([y_streams[:, j * chunk : (j + 1) * chunk] for j in range(count)])
    return x, y, len(vocab)


def _run_c(watch_dir, quick):
    import keras

    from keras_gradwatch import GradWatch
    from keras_gradwatch import TruncatedBPTT

    streams = 32
    x, y, vocab = _char_streams(64_000 if quick else 2_560_000, streams, 500)
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([
        keras.Input(batch_shape=(streams, None), dtype="int32"),
        keras.layers.Embedding(vocab, 32),
        keras.layers.LSTM(128, stateful=True, return_sequences=True),
        keras.layers.Dense(vocab, activation="softmax"),
    ])
    model = TruncatedBPTT(inner, window=100, reset="epoch")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    start = _started()
    epochs = 1 if quick else 2
    callbacks = [GradWatch(watch_dir)] if watch_dir else []
    model.fit(x, y, batch_size=streams, epochs=epochs, shuffle=False, verbose=0,
              callbacks=callbacks)
    return start, epochs


RUNS = {"a": _run_a, "b": _run_b, "c": _run_c}


def _started():
    return time.time()


def _child(case, watch_dir, quick):
    """Trains one case; prints when training started and what was recorded.

    The parent times the child until it exits, so drawing at exit counts.
    """
    start, epochs = RUNS[case](watch_dir, quick)
    result = {"start": start, "epochs": epochs}
    if watch_dir:
        import gc

        from keras_gradwatch import records
        from keras_gradwatch.watch import _drawing

        # What the end of the process does (atexit would do it just after),
        # timed: the plots and report the budget left for the exit.
        begin = time.perf_counter()
        for drawing in gc.get_objects():
            if isinstance(drawing, _drawing.ExitDrawing):
                drawing.at_exit()
        drawn = time.perf_counter() - begin
        run = records.load_run(watch_dir)
        # GradWatch's own CPU time as the run's summary gives it (the budget
        # charged the same, waiting heavy work at its wall time).
        own = run.summary["own_time"]
        result["inside"] = own["cpu_seconds"] + drawn
        result["traced"] = own["one_off_cpu_seconds"]
        result["ran"] = time.time() - start
        result.update(
            measurements=len(run.measurements),
            alerts={k: sum(1 for a in run.alerts if a["kind"] == k)
                    for k in ("nonfinite", "exploding", "vanishing")},
            messages=[a["message"][:160] for a in run.alerts],
            traces=sum(1 for m in run.measurements if m.get("traced")),
        )
    print("RESULT " + json.dumps(result), flush=True)


# The parent: alternate the two sides and compare ----------------------------------


def _timed_child(case, watch_dir, quick):
    command = [sys.executable, os.path.abspath(__file__), "--child", case]
    if watch_dir:
        command += ["--watch", watch_dir]
    if quick:
        command.append("--quick")
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True)
    ended = time.time()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"case {case} failed:\n{done.stderr[-3000:]}")
    line = next(row for row in done.stdout.splitlines() if row.startswith("RESULT "))
    result = json.loads(line[len("RESULT "):])
    result["seconds"] = ended - result["start"]
    result["cpu"] = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if watch_dir:
        names = set(os.listdir(watch_dir))
        result["drawn"] = {"report.html", "decay_profile.png", "gradient_norms.png"} <= names
    return result


def _compare(case, repeats, quick, folder):
    without, with_, watched, cpu = [], [], [], {False: 0.0, True: 0.0}
    for repeat in range(repeats):
        order = (False, True) if repeat % 2 == 0 else (True, False)  # ABBA
        for watch in order:
            run_dir = os.path.join(folder, f"{case}-{repeat}") if watch else None
            result = _timed_child(case, run_dir, quick)
            (with_ if watch else without).append(result["seconds"])
            cpu[watch] += result["cpu"]
            if watch:
                watched.append(result)
    ratio = sum(with_) / sum(without)
    paired = statistics.median(w / o for w, o in zip(with_, without))
    inside = statistics.median(r["inside"] / r["ran"] for r in watched)
    traced = statistics.median(r["traced"] for r in watched)
    last = watched[-1]
    measurements = [r["measurements"] for r in watched]
    exploding = sum(r["alerts"]["exploding"] for r in watched)
    print(
        f"{TITLES[case]}: {sum(without) / repeats:.1f} s without, "
        f"{sum(with_) / repeats:.1f} s with GradWatch per run; wall-time ratio "
        f"{ratio:.3f} (target <= {TARGETS[case]}; median of the {repeats} "
        f"pairs {paired:.3f}; CPU-time ratio {cpu[True] / cpu[False]:.3f}; runs "
        f"without {[round(t, 1) for t in without]}, with {[round(t, 1) for t in with_]}). "
        f"Time inside GradWatch {100 * inside:.2f} % of the watched run (tracing "
        f"{traced:.2f} s, drawing at exit included). Measurements per run "
        f"{measurements} ({min(measurements) / last['epochs']:.1f} per epoch, "
        f"{last['epochs']} epoch(s); traced once: {last['traces'] == 1}); "
        f"alerts {last['alerts']}, exploding over all runs: {exploding}; "
        f"plots and report drawn by exit: {all(r['drawn'] for r in watched)}"
    )
    for message in last["messages"]:
        print(f"    alert: {message}")
    return ratio


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cases", nargs="*", metavar="CASE", help="a, b and/or c (default: all)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="small runs")
    parser.add_argument("--child", choices=CASES, help=argparse.SUPPRESS)
    parser.add_argument("--watch", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.watch, args.quick)
        return
    unknown = [case for case in args.cases if case not in CASES]
    if unknown:
        parser.error(f"unknown case(s) {unknown}; pick from {list(CASES)}")
    folder = tempfile.mkdtemp(prefix="gradwatch-real-")
    try:
        for case in args.cases or CASES:
            _compare(case, 1 if args.quick else args.repeats, args.quick, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
