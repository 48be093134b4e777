"""Gradients across depth: a 20-layer sigmoid MLP and its ReLU/He twin.

Both networks have 20 Dense layers of 32 units and train with SGD(0.1) on
the same binary task (is the sum of the first 10 of 20 features positive?).
The sigmoid network cannot carry gradient back to its first layers (a
sigmoid passes at most 0.25 of it per layer): it stays at chance, and
GradWatch says so with a `vanishing` alert across depth as soon as its
rules allow (after the first epoch and 200 updates, once the loss has
stalled), naming the first layers and the fraction they get. The ReLU twin
with He initialisation learns the task, with no alert. Each run folder
holds `depth_profile.png`, the gradient layer by layer, and `report.html`.

Run:

    python examples/deep_mlp_depth.py [--quick] [--runs runs/depth]
"""

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from keras_gradwatch import GradWatch  # noqa: E402

DEPTH, UNITS = 20, 32
TWINS = {"sigmoid": ("sigmoid", "glorot_uniform"), "relu_he": ("relu", "he_normal")}


def make_data(rows, seed=0):
    """20 Gaussian features; label 1 when the first 10 sum above 0."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 20)).astype("float32")
    return x, (x[:, :10].sum(axis=1) > 0).astype("float32")


def make_model(activation, initializer):
    model = keras.Sequential(
        [keras.Input((20,))]
        + [keras.layers.Dense(UNITS, activation=activation, kernel_initializer=initializer)
           for _ in range(DEPTH - 1)]
        + [keras.layers.Dense(1, activation="sigmoid")]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rows and epochs")
    parser.add_argument("--runs", default="runs/depth", help="output folder")
    args = parser.parse_args(argv)
    # 64 updates per epoch either way: the vanishing verdict may come from
    # update 200 on, in the fourth epoch.
    rows, batch_size, epochs = (1024, 16, 4) if args.quick else (2048, 32, 6)
    x, y = make_data(rows)
    results = {}
    for name, (activation, initializer) in TWINS.items():
        keras.utils.set_random_seed(0)
        # This short run trains for about 2 s of CPU (256 steps of 6-8 ms),
        # and GradWatch's budget first keeps room for drawing the plots at
        # the end (about a second): at the default overhead (3 %) it is
        # measured at steps 0 and 1 only, and the verdict (from update 200
        # on) cannot come. overhead=0.25 lets it measure a few times an epoch.
        watch = GradWatch(os.path.join(args.runs, name), overhead=0.25)
        history = make_model(activation, initializer).fit(
            x, y, epochs=epochs, batch_size=batch_size, verbose=0, callbacks=[watch]
        )
        depth = watch.last_measurement.depth
        fraction = depth.fractions()[0]
        results[name] = {
            "accuracy": history.history["accuracy"][-1],
            "fraction": float(fraction),
            "alerts": [(a.kind, a.step, a.epoch, a.layer, a.message) for a in watch.alerts],
        }
        print(f"\n{name}: accuracy {results[name]['accuracy']:.3f} after {epochs} epochs; "
              f"the first layer gets {fraction:.2g} of the gradient at "
              f"'{depth.layers[depth.reference]}' (latest measurement)")
        if not watch.alerts:
            print("  GradWatch: no alert.")
        for kind, step, epoch, layer, message in results[name]["alerts"]:
            print(f"  GradWatch {kind} alert at step {step} (epoch {epoch}), layer "
                  f"'{layer}':\n    {message}")
        print(f"  Plots and report: {os.path.join(args.runs, name)}")
    return results


if __name__ == "__main__":
    main()
