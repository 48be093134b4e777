"""A learning-rate fault with Adam: named by the alert, rescued by a rollback.

A small regression network trains with Adam at a learning rate of 0.01,
8 steps an epoch. Before step 27 a faulty callback (as a schedule callback
with a wrong unit would) multiplies the learning rate by 1000: Adam's step
is set by the learning rate, so the weights are thrown far off and the
validation loss leaps by orders of magnitude and stays there.

The same run five ways:

1. without GradWatch;
2. `GradWatch()` (warn): the first alert's advice names the learning rate's
   rise ("The learning rate rose 1000x at step 27, from 0.01 to 10: lower
   it back ..."), not clipping: clipping does not bound Adam's step;
3. `GradWatch(alerting=Alerting(exploding="clip"))`: AutoClip from the first alert (it warns
   that it cannot bound Adam's step, and it does not rescue the run);
4. `GradWatch(clip="auto")`: AutoClip from the start, the same;
5. `GradWatch(alerting=Alerting(exploding="rollback"))`: at the first alert it goes back to the
   last healthy weights and optimizer state with a tenth of the learning
   rate, and training goes on.

The script ends with a table: the validation loss before the fault and at
the end, and what each run did.

Run (about ten seconds):

    python examples/learning_rate_fault.py
    python examples/learning_rate_fault.py --quick

Writes `runs/learning_rate_fault/warn/`, `clip/`, `autoclip/`, `rollback/`.
"""

import argparse
import json
import math
import os
import pathlib
import warnings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gradwatch import Alerting  # noqa: E402
from keras_gradwatch import GradientWarning  # noqa: E402
from keras_gradwatch import GradWatch  # noqa: E402

FAULT_STEP = 27
FAULT_FACTOR = 1000.0
STEPS_PER_EPOCH = 8


class LearningRateFault(keras.callbacks.Callback):
    """Multiplies the learning rate by `factor` before step `at` (from 1)."""

    def __init__(self, at=FAULT_STEP, factor=FAULT_FACTOR):
        super().__init__()
        self.at, self.factor, self.step = at, factor, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        if self.step == self.at:
            rate = self.model.optimizer.learning_rate
            rate.assign(rate * self.factor)


def regression(n, seed):
    """`y = x · w + 0.5 sin(2 x_0) + noise`, 8 inputs."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 8)).astype("float32")
    y = x @ np.linspace(-1, 1, 8) + 0.5 * np.sin(2 * x[:, 0]) + 0.1 * rng.normal(size=n)
    return x, y.astype("float32")[:, None]


def build_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(32, activation="relu"),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(1)])
    model.compile(keras.optimizers.Adam(1e-2), "mse")
    return model


def train(watch, epochs):
    """One run with the fault; returns the validation loss of each epoch."""
    model = build_model()
    callbacks = [LearningRateFault()] + ([watch] if watch is not None else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientWarning)  # printed below
        warnings.simplefilter("ignore", UserWarning)  # AutoClip's note: in the summary
        history = model.fit(*regression(STEPS_PER_EPOCH * 64, 0), batch_size=64,
                            epochs=epochs, verbose=0, validation_data=regression(256, 1),
                            callbacks=callbacks)
    return [float(v) for v in history.history["val_loss"]]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/learning_rate_fault")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--quick", action="store_true", help="10 epochs, no plots")
    args = parser.parse_args(argv)
    epochs = 10 if args.quick else args.epochs
    runs = pathlib.Path(args.runs)
    before = (FAULT_STEP - 1) // STEPS_PER_EPOCH - 1  # the last epoch end before the fault
    ways = [
        ("no GradWatch", None, {}),
        ("GradWatch() (warn)", "warn", {}),
        ("exploding='clip'", "clip", {"alerting": Alerting(exploding="clip")}),
        ("clip='auto'", "autoclip", {"clip": "auto"}),
        ("exploding='rollback'", "rollback", {"alerting": Alerting(exploding="rollback")}),
    ]
    results = {}
    for number, (name, folder, settings) in enumerate(ways, start=1):
        print(f"{number}. {name}:")
        plots = None if args.quick else "end"
        watch = GradWatch(runs / folder, plots=plots, **settings) if folder else None
        losses = train(watch, epochs)
        done = json.loads((runs / folder / "summary.json").read_text()) if folder else {}
        if watch is not None and watch.alerts:
            first = watch.alerts[0]
            print(f"   first alert, step {first.step}: {first.message}")
        for rollback in done.get("rollbacks", []):
            print(f"   rollback at step {rollback['step']} to step {rollback['restored_step']}, "
                  f"learning rate {rollback['learning_rate']:.3g}")
        if done.get("clip_note"):
            print(f"   AutoClip: {done['clip_note']}")
        print(f"   validation loss by epoch: {[round(v, 4) for v in losses]}")
        results[name] = {"before": losses[before], "final": losses[-1],
                         "alerts": sum((done.get("alerts") or {}).values()),
                         "rollbacks": len(done.get("rollbacks", [])),
                         "clipped": done.get("clipped_updates")}
    print(f"\nLearning rate x{FAULT_FACTOR:g} before step {FAULT_STEP} (Adam, lr 0.01), "
          f"{epochs} epochs of {STEPS_PER_EPOCH} steps:")
    print("run                    val loss before the fault  final val loss  final/before  "
          "alerts  rollbacks  clipped updates")
    for name, result in results.items():
        ratio = result["final"] / result["before"]
        clipped = "-" if result["clipped"] is None else str(result["clipped"])
        print(f"{name:<22} {result['before']:>25.4g}  {result['final']:>14.4g}  "
              f"{ratio if math.isfinite(ratio) else float('nan'):>12.3g}  "
              f"{result['alerts']:>6}  {result['rollbacks']:>9}  {clipped:>15}")
    return results


if __name__ == "__main__":
    main()
