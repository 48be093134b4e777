"""Benchmark: memory and time of a 1M-step run folder, read and written.

1. Reading: writes a run folder of 1,000,000 step records (as GradWatch
   writes them: step, epoch, loss, grad_norm, skipped_updates, lr) and runs
   `gradwatch summary` on it in a process of its own, printing its wall
   time and peak resident memory (target: under 100 MB, a few seconds).
2. Training: a tiny LSTM trains one real step with `GradWatch` attached;
   then GradWatch's per-step path (`on_train_batch_end`, with the logs a
   step gives) runs for 1,000,000 steps inside that `fit`, writing the
   records to disk, and the process's resident memory is printed at 100k
   and at every further 100k steps (target: flat within 5 MB from 100k to
   1M: nothing keeps per-step history).

Usage:

    python benchmarks/bench_run_folder.py [--steps N] [--skip-training]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _memory import rss_bytes  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

_SUMMARY = """
import resource, sys, time, io, contextlib
start = time.perf_counter()
from keras_gradwatch import cli
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = cli.main(["summary", sys.argv[1]])
seconds = time.perf_counter() - start
try:  # this process's own peak: ru_maxrss keeps the forking parent's across exec
    with open("/proc/self/status") as f:
        peak = next(int(l.split()[1]) for l in f if l.startswith("VmHWM")) / 1024
except OSError:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB
print(status, round(seconds, 2), round(peak, 1), out.getvalue().splitlines()[0])
"""


def write_run(path, steps):
    """A run folder of `steps` step records and a few measurements."""
    os.makedirs(os.path.join(path, "profiles"), exist_ok=True)
    with open(os.path.join(path, "run.json"), "w") as f:
        json.dump({"format": 1, "writer": "keras_gradwatch", "model": "bench",
                   "tbptt": None, "settings": {}, "fits": [{"started": 0.0, "first_step": 0}]}, f)
    rng = random.Random(0)
    with open(os.path.join(path, "steps.jsonl"), "w") as f:
        for step in range(1, steps + 1):
            f.write(json.dumps({
                "step": step, "epoch": step // 1000, "loss": 1.0 / step ** 0.5,
                "grad_norm": rng.lognormvariate(0.0, 0.5), "skipped_updates": 0,
                "lr": 0.001,
            }) + "\n")


def reading(steps):
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_run(folder, steps)
        size = os.path.getsize(os.path.join(folder, "steps.jsonl")) / 2**20
        print(f"wrote {steps} step records ({size:.0f} MB) in "
              f"{time.perf_counter() - start:.1f} s")
        done = subprocess.run([sys.executable, "-c", _SUMMARY, folder], cwd=ROOT,
                              capture_output=True, text=True, check=True)
        status, seconds, peak, first = done.stdout.split(" ", 3)
        print(f"gradwatch summary: exit {status}, {seconds} s, peak RSS {peak} MB")
        print(f"  {first.strip()}")


def training(steps):
    import keras
    import numpy as np

    from keras_gradwatch import GradWatch
    from keras_gradwatch import layers

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((None, 2)), layers.LSTM(4), keras.layers.Dense(1)])
    model.compile(optimizer="adam", loss="mse")
    x = np.random.default_rng(0).uniform(size=(8, 10, 2)).astype("float32")
    y = x.sum(axis=1)[:, :1]
    rss = {}

    class Drive(keras.callbacks.Callback):
        """Runs GradWatch's per-step path `steps` times in this fit."""

        def __init__(self, watch):
            super().__init__()
            self.watch = watch

        def on_train_batch_end(self, batch, logs=None):
            rng = random.Random(1)
            start = time.perf_counter()
            for step in range(1, steps + 1):
                self.watch.on_train_batch_end(
                    step, {"loss": 1.0 / step, "grad_norm": rng.lognormvariate(0.0, 0.5)})
                if step % (steps // 10) == 0:
                    rss[step] = rss_bytes() / 2**20
                    print(f"  step {step:>9}: RSS {rss[step]:.1f} MB "
                          f"({time.perf_counter() - start:.0f} s)", flush=True)

    with tempfile.TemporaryDirectory() as folder:
        watch = GradWatch(folder, plots=None)
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[watch, Drive(watch)])
        with open(os.path.join(folder, "steps.jsonl")) as f:
            lines = sum(1 for _ in f)
    first, last = rss[min(rss)], rss[max(rss)]
    print(f"training process: RSS {first:.1f} MB at step {min(rss)}, {last:.1f} MB at "
          f"step {max(rss)} (change {last - first:+.1f} MB); {lines} step records written")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--skip-training", action="store_true")
    args = parser.parse_args()
    reading(args.steps)
    if not args.skip_training:
        training(args.steps)


if __name__ == "__main__":
    main()
