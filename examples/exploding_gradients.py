"""Exploding gradients: named with the NaN they cause, then fixed.

A ReLU SimpleRNN whose recurrent kernel is an orthogonal matrix scaled by
1.6 blows up after 18 updates. `GradWatch` measures the time profile
before the first update: it dips and rises again only over the last few
steps back (13x its lowest value at the far end, but the far quarter only
about 2x: no steady rise), so the profile alone makes no claim. The
every-step gradient norm creeps up from about 200 to a few thousand, then
leaps to 1e8 together with the loss at step 18 (one large update can also
be flagged there, by the update ratio, when that step's update is
measured); a single leap is no blow-up until the next step confirms it,
and at step 19 the loss is NaN: the `"exploding"` alert states the leap of
step 18 and comes first, then the `"nonfinite"` alert, which stops
training (its default action), and the plots and report are saved. The same run with the `global_clipnorm` the report
suggests trains; so do two runs with adaptive clipping at the 10th
percentile of the gradient norms seen so far (AutoClip's paper value,
`AutoClip(percentile=10)`), one with `GradWatch(clip=AutoClip(...))` from
the start, one with `GradWatch(alerting=Alerting(exploding=AutoClip(...),
nonfinite="rollback"))`, which starts clipping at the first `exploding`
alert and, since that alert comes with the NaN, goes back to the last
finite weights. A fifth run shows
AutoClip at its default, the 90th percentile (made not to clip most updates
of a healthy run): the norms of this recurrence rise step after step, the
90th percentile of the norms seen rises with them, and it does not hold the
run. The script ends with a table
of the five runs.

Run (about fifteen seconds):

    python examples/exploding_gradients.py
    python examples/exploding_gradients.py --quick

Writes `runs/exploding/unclipped/`, `clipped/`, `autoclip/`,
`clip_on_alert/` and `autoclip_default/`.
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
from keras_gradwatch import AutoClip  # noqa: E402
from keras_gradwatch import GradientWarning  # noqa: E402
from keras_gradwatch import GradWatch  # noqa: E402
from keras_gradwatch import layers  # noqa: E402


def build_model(clipnorm=None, gain=1.6):
    """A ReLU SimpleRNN with a recurrent kernel scaled well above 1."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((None, 2)),
            layers.SimpleRNN(
                16,
                activation="relu",
                recurrent_initializer=keras.initializers.Orthogonal(gain=gain),
                name="relu_rnn",
            ),
            keras.layers.Dense(1),
        ]
    )
    optimizer = keras.optimizers.SGD(1e-4, global_clipnorm=clipnorm)
    model.compile(optimizer=optimizer, loss="mse")
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default="runs/exploding")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(512 if not args.quick else 256, 40, 2)).astype("float32")
    y = x.sum(axis=1)[:, :1]
    runs = pathlib.Path(args.runs)

    print("1. Unclipped ReLU SimpleRNN (recurrent kernel = 1.6 x orthogonal):")
    model = build_model()
    watch = GradWatch(runs / "unclipped")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GradientWarning)  # printed below
        history = model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0,
                            callbacks=[watch])
    for alert in watch.alerts:
        print(f"   step {alert.step}: {alert.kind} alert. {alert.message}")
    losses = [float(v) for v in history.history["loss"]]
    summary = json.loads((runs / "unclipped" / "summary.json").read_text())
    print(f"   Training {summary['status']} after {summary['steps']} steps; "
          f"loss {losses}. Report: {runs / 'unclipped' / 'report.html'}")

    table = [("none", summary["status"], losses, summary["steps"], None)]
    clipnorm = summary["suggested_clipnorm"]
    runs_to_make = [
        (f"2. Same model with the suggested global_clipnorm={clipnorm:g}:", "clipped",
         f"global_clipnorm={clipnorm:g}", {"clipnorm": clipnorm}, None, "warn"),
        ("3. Same model with adaptive clipping from the start, "
         "GradWatch(clip=AutoClip(percentile=10)):",
         "autoclip", "AutoClip p10 from the start", {}, AutoClip(percentile=10), "warn"),
        ("4. Same model, GradWatch(alerting=Alerting(exploding=AutoClip(percentile=10), "
         "nonfinite='rollback')): clipping starts at the first alert, and the run goes back "
         "to its last finite weights:",
         "clip_on_alert", "AutoClip p10 from 1st alert", {}, None, AutoClip(percentile=10)),
        ("5. Same model, GradWatch(clip='auto') at the default 90th percentile:",
         "autoclip_default", "AutoClip p90 from the start", {}, "auto", "warn"),
    ]
    for title, folder, name, model_args, clip, exploding in runs_to_make:
        print(title)
        model = build_model(**model_args)
        # With clipping from the first alert, the run goes back to its last
        # finite weights: the alert comes with the blow-up it names.
        nonfinite = "rollback" if folder == "clip_on_alert" else "warn"
        alerting = Alerting(nonfinite=nonfinite, exploding=exploding)
        watch = GradWatch(runs / folder, alerting=alerting, clip=clip)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", GradientWarning)
            history = model.fit(x, y, epochs=args.epochs, batch_size=32, verbose=0,
                                callbacks=[watch])
        run_losses = [float(v) for v in history.history["loss"]]
        finite = all(math.isfinite(v) for v in run_losses)
        done = json.loads((runs / folder / "summary.json").read_text())
        print(f"   loss by epoch {[round(v, 3) for v in run_losses]}: "
              + ("finite throughout." if finite else "still not finite.")
              + f" Report: {runs / folder / 'report.html'}")
        table.append((name, done["status"], run_losses, done["steps"], done["clipped_updates"]))
        if folder == "clipped":
            losses = run_losses
    print("\nclipping                        status     steps  final loss  clipped updates")
    for name, status, run_losses, count, clipped in table:
        print(f"{name:<31} {status:<10} {count:>5}  {run_losses[-1]:<10.4g}  "
              f"{'-' if clipped is None else clipped}")
    return losses


if __name__ == "__main__":
    main()
