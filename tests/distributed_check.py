"""Runs TruncatedBPTT and GradWatch on one device and under MirroredStrategy.

Run by `test_distribution.py` in a process of its own: the two logical CPU
devices must be configured before TensorFlow starts. Prints one JSON object
of measured differences on its last line.
"""

import json
import math
import os
import sys
import tempfile
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import tensorflow as tf  # noqa: E402

CPU = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    CPU, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gradwatch import Alerting  # noqa: E402
from keras_gradwatch import AutoClip  # noqa: E402
from keras_gradwatch import GradWatch  # noqa: E402
from keras_gradwatch import TruncatedBPTT  # noqa: E402
from keras_gradwatch import layers  # noqa: E402
from keras_gradwatch import records  # noqa: E402
from keras_gradwatch.errors import InvalidInputError  # noqa: E402

GLOBAL_BATCH = 8


def data(nan_at=None):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 12, 2)).astype("float32")
    y = (np.cumsum(x[..., :1], axis=1) / 4).astype("float32")
    if nan_at is not None:
        y[nan_at] = np.nan
    return x, y


def train(strategy, wrapped=True, nan_at=None, epochs=2, clip=None):
    replicas = strategy.num_replicas_in_sync
    folder = tempfile.mkdtemp()
    with strategy.scope():
        keras.utils.set_random_seed(0)
        inner = keras.Sequential(
            [
                keras.Input(batch_shape=(GLOBAL_BATCH // replicas if wrapped else None, None, 2)),
                # Wrapped, the layer's own unroll is set aside and restored.
                layers.LSTM(
                    5, stateful=wrapped, return_sequences=True, unroll=wrapped,
                    name="lstm",
                ),
                keras.layers.Dense(1, name="head"),
            ]
        )
        model = TruncatedBPTT(inner, window=4, backprop=6) if wrapped else inner
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = data(nan_at)
    watch = GradWatch(folder, every=1, plots=None, alerting=Alerting(nonfinite="warn"),
                      clip=AutoClip(percentile=10.0) if clip == "auto" else clip)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(
            x, y, batch_size=GLOBAL_BATCH, epochs=epochs, verbose=0, shuffle=False,
            callbacks=[watch],
        )
    return {
        "weights": inner.get_weights(),
        "history": history.history,
        "run": records.load_run(folder),
        "alerts": [(a.kind, a.signal, a.step, a.layer) for a in watch.alerts],
        "unroll": inner.get_layer("lstm").unroll,
        "clip": watch._engine.interventions.clip_state(),
    }


def max_diff(a, b):
    return max(float(np.max(np.abs(u - v))) for u, v in zip(a, b))


def relative(a, b):
    a, b = np.asarray(a, "float64"), np.asarray(b, "float64")
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(a), 1e-12)))


def compare(single, mirrored):
    measurements = zip(single["run"].measurements, mirrored["run"].measurements)
    profile_error, norm_error = 0.0, 0.0
    for m1, m2 in measurements:
        p1, p2 = single["run"].profiles(m1), mirrored["run"].profiles(m2)
        for name in p1:
            profile_error = max(profile_error, relative(p1[name], p2[name]))
        norm_error = max(norm_error, relative(m1["global_norm"], m2["global_norm"]))
    return {
        "weights": max_diff(single["weights"], mirrored["weights"]),
        "loss": relative(single["history"]["loss"], mirrored["history"]["loss"]),
        "profiles": profile_error,
        "global_norm": norm_error,
        "measurements": [len(single["run"].measurements), len(mirrored["run"].measurements)],
    }


def main():
    mirrored_strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    default = tf.distribute.get_strategy()
    out = {"replicas": mirrored_strategy.num_replicas_in_sync}

    single, mirrored = train(default), train(mirrored_strategy)
    out["tbptt"] = compare(single, mirrored)
    out["tbptt"]["layer_unroll"] = [single["unroll"], mirrored["unroll"]]
    out["tbptt"]["grad_norm"] = relative(
        single["history"]["grad_norm"], mirrored["history"]["grad_norm"]
    )
    steps = [records.number(s["grad_norm"]) for s in mirrored["run"].steps]
    out["tbptt"]["step_grad_norm"] = relative(
        [records.number(s["grad_norm"]) for s in single["run"].steps], steps
    )

    single, mirrored = train(default, wrapped=False), train(mirrored_strategy, wrapped=False)
    out["plain"] = compare(single, mirrored)
    # The grad_norm GradWatch adds to a plain model's train step.
    out["plain"]["step_grad_norm"] = relative(
        [records.number(s["grad_norm"]) for s in single["run"].steps],
        [records.number(s["grad_norm"]) for s in mirrored["run"].steps],
    )

    if "--extra" in sys.argv:
        extra(out, mirrored_strategy, default)
    else:
        global_batch_shape(out, mirrored_strategy)
    print(json.dumps(out))


def extra(out, mirrored_strategy, default):
    """The slower cases (`test_distribution.py`'s slow tests): alerts and
    skipped updates, one-worker MultiWorkerMirroredStrategy, AutoClip."""
    single, mirrored = train(default, nan_at=9), train(mirrored_strategy, nan_at=9)
    out["alerts"] = {"single": single["alerts"], "mirrored": mirrored["alerts"]}
    out["skipped"] = [
        single["run"].steps[-1]["skipped_updates"],
        mirrored["run"].steps[-1]["skipped_updates"],
    ]

    # MultiWorkerMirroredStrategy without TF_CONFIG: one worker, local devices.
    worker = tf.distribute.MultiWorkerMirroredStrategy()
    multi = train(worker, epochs=1)
    out["multi_worker"] = {
        "replicas": worker.num_replicas_in_sync,
        "finite": all(math.isfinite(v) for v in multi["history"]["loss"]),
        "measurements": len(multi["run"].measurements),
    }

    # Adaptive clipping: the norm history of the all-reduced norm, the same
    # on every replica, clips as on one device.
    out["autoclip"] = {}
    for wrapped in (True, False):
        single = train(default, wrapped=wrapped, clip="auto")
        mirrored = train(mirrored_strategy, wrapped=wrapped, clip="auto")
        out["autoclip"]["tbptt" if wrapped else "plain"] = {
            "weights": max_diff(single["weights"], mirrored["weights"]),
            "clip": [single["clip"], mirrored["clip"]],
        }



def global_batch_shape(out, mirrored_strategy):
    """batch_shape is the per-replica batch: a global batch equal to it is refused."""
    with mirrored_strategy.scope():
        inner = keras.Sequential([
            keras.Input(batch_shape=(GLOBAL_BATCH, None, 2)),
            layers.LSTM(5, stateful=True, return_sequences=True),
        ])
        model = TruncatedBPTT(inner, window=4)
        model.compile(optimizer="sgd", loss="mse")
    x, y = data(None)
    try:
        model.fit(x, np.repeat(y, 5, axis=-1), batch_size=GLOBAL_BATCH, epochs=1, verbose=0)
        out["global_batch_shape"] = None
    except InvalidInputError as error:
        out["global_batch_shape"] = str(error)


if __name__ == "__main__":
    sys.exit(main())
