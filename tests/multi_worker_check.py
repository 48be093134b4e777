"""One worker of a two-worker MultiWorkerMirroredStrategy run (or a
single-process run of the same training), for `test_multi_worker.py`.

Usage: `multi_worker_check.py CASE LOG_DIR OUT_JSON`; `TF_CONFIG` (set by the
test) makes it a worker, its absence a single process without a strategy.
CASE is "plain" (an LSTM model with GradWatch), "tbptt" (TruncatedBPTT with
GradWatch), "clip" ("plain" with clip="auto"), "budget" ("plain", measured as the CPU budget allows) or "stop"
(a batch that blows the gradient up, exploding="stop").
Writes what it measured to OUT_JSON.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

MULTI = "TF_CONFIG" in os.environ
STRATEGY = tf.distribute.MultiWorkerMirroredStrategy() if MULTI else tf.distribute.get_strategy()

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gradwatch import Alerting  # noqa: E402
from keras_gradwatch import AutoClip  # noqa: E402
from keras_gradwatch import GradWatch  # noqa: E402
from keras_gradwatch import TruncatedBPTT  # noqa: E402
from keras_gradwatch import layers  # noqa: E402
from keras_gradwatch import records  # noqa: E402

GLOBAL_BATCH = 8
ROWS = 32


def data(case):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(ROWS, 12, 2)).astype("float32")
    if case == "stop":
        x[16:24] *= 300.0  # the third batch: its gradient is far above max_grad_norm
    y = (np.cumsum(x[..., :1], axis=1) / 4).astype("float32")
    return x, (y if case == "tbptt" else y[:, -1])


def model(case):
    replicas = STRATEGY.num_replicas_in_sync
    with STRATEGY.scope():
        keras.utils.set_random_seed(0)
        if case == "tbptt":
            inner = keras.Sequential([
                keras.Input(batch_shape=(GLOBAL_BATCH // replicas, None, 2)),
                layers.LSTM(6, stateful=True, return_sequences=True, name="lstm"),
                keras.layers.Dense(1, name="head"),
            ])
            trained = TruncatedBPTT(inner, window=4, backprop=6)
        else:
            inner = trained = keras.Sequential([
                keras.Input((12, 2)),
                layers.LSTM(6, name="lstm"),
                keras.layers.Dense(1, name="head"),
            ])
        trained.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    return inner, trained


def main(case, log_dir, out):
    inner, trained = model(case)
    x, y = data(case)
    settings = {"every": 1, "plots": None}
    if case == "stop":
        settings.update(alerting=Alerting(max_grad_norm=100.0, exploding="stop"), every=2)
    if case == "clip":  # AutoClip from the first step, at a low percentile
        settings.update(clip=AutoClip(percentile=10.0))
    if case == "budget":  # measured when the chief's CPU budget allows
        settings.update(every=None, overhead=0.5)
    watch = GradWatch(log_dir, **settings)
    history = trained.fit(x, y, batch_size=GLOBAL_BATCH, epochs=2, verbose=0,
                          shuffle=False, callbacks=[watch])
    workers = watch._engine.workers
    result = {
        "replicas": STRATEGY.num_replicas_in_sync,
        "chief": None if workers is None else workers.chief,
        "agreements": None if workers is None else workers.agreements,
        "agreement_seconds": None if workers is None else workers.seconds,
        "log_dir": str(watch.log_dir),
        "weights": [w.tolist() for w in inner.get_weights()],
        "history": history.history,
        "alerts": [[a.kind, a.signal, a.step] for a in watch.alerts],
        "stopped": bool(trained.stop_training),
        "steps": watch._engine.step,
        "clip": watch._engine.interventions.clip_state(),
    }
    run = records.load_run(watch.log_dir)  # a worker's own folder still exists
    result["records"] = {
        "steps": [[s["step"], records.number(s["grad_norm"])] for s in run.steps],
        "step_loss": [records.number(s.get("loss")) for s in run.steps],
        "measurements": [
            [m["step"], m["global_norm"], {k: v.tolist() for k, v in run.profiles(m).items()}]
            for m in run.measurements
        ],
        "summary": {k: run.summary.get(k) for k in ("steps", "measurements", "status")},
    }
    with open(out, "w") as file:
        json.dump(result, file)


if __name__ == "__main__":
    main(*sys.argv[1:4])
