"""Shared test set-up: quiet TensorFlow, seeded runs."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)
    yield


class _NoExitHooks:
    """`atexit` as the package's drawings see it during a test: nothing is
    registered, so that the test process does not draw, when it exits, the
    runs of every test that left one for the exit (a test of that drawing
    calls `ExitDrawing.at_exit` itself)."""

    @staticmethod
    def register(function, *args, **kwargs):
        return function

    @staticmethod
    def unregister(function):
        return None


@pytest.fixture(autouse=True)
def _no_drawing_at_process_exit(monkeypatch):
    from keras_gradwatch.watch import _drawing

    monkeypatch.setattr(_drawing, "atexit", _NoExitHooks)


def draw_runs_left_for_exit():
    """What the end of the process does: draws every run a `GradWatch` left
    for the exit (`_drawing.ExitDrawing`), the latest first, as `atexit`
    would. For runs whose callbacks the test does not hold (an example
    script's)."""
    import gc

    from keras_gradwatch.watch import _drawing

    waiting = [o for o in gc.get_objects() if isinstance(o, _drawing.ExitDrawing) and o.pending]
    for drawing in reversed(waiting):
        drawing.at_exit()


def write_synthetic_run(path, measurements=3, layers=("rnn", "lstm"), length=30,
                        steps=None, tbptt=True, nan_step=None, backprops=None):
    """Writes records like GradWatch's, without training anything.

    Profiles decay as rate**lag with a rate that improves over training.
    `backprops`: each measurement's TBPTT backprop (default 15 each).
    """
    import numpy as np

    from keras_gradwatch import records

    steps = steps or max(1, measurements * 5)
    writer = records.RunWriter(path)
    writer.open()
    writer.write_json(
        records.RUN,
        {
            "format": 1,
            "model": "synthetic",
            "tbptt": {"window": 10, "backprop": 15, "reset": "batch"} if tbptt else None,
            "settings": {"every": 5},
            "fits": [{"started": 0.0, "first_step": 0}],
        },
    )
    rng = np.random.default_rng(0)
    for step in range(1, steps + 1):
        norm = float("nan") if step == nan_step else float(1.0 + rng.random())
        writer.append(
            records.STEPS,
            {"step": step, "epoch": step // 10, "loss": 1.0 / step,
             "grad_norm": norm, "skipped_updates": 0},
            flush=False,
        )
    lags = np.arange(length)
    for index in range(measurements):
        step = index * 5
        rates = {name: 0.6 + 0.35 * index / max(1, measurements - 1) - 0.05 * k
                 for k, name in enumerate(layers)}
        profiles = {name: 2.0 * rates[name] ** lags for name in layers}
        relative = writer.write_profiles(index, profiles)
        writer.append(
            records.MEASUREMENTS,
            {
                "index": index, "step": step, "epoch": step // 10, "length": length,
                "global_norm": 1.5, "layer_norms": {name: 1.0 for name in layers},
                # Without truncation there is no backprop span, and no bias.
                "backprop": (backprops[index] if backprops else 15) if tbptt else None,
                "profiles": relative,
                "layers": {
                    name: {"site": "state", "decay_rate": rates[name], "horizon": 9,
                           "truncation_bias": 0.01 if tbptt else "NaN",
                           "suggested_window": 7, "lag0": 2.0}
                    for name in layers
                },
            },
        )
    for kind, step in (("exploding", 3), ("vanishing", 7), ("nonfinite", 9)):
        writer.append(
            records.ALERTS,
            {"kind": kind, "step": step, "epoch": 0, "layer": layers[0],
             "value": 12.5, "threshold": 10.0, "signal": "grad_norm",
             "message": f"A {kind} alert <with markup & a suggestion>.", "suppressed": 2},
        )
    writer.close()
    return path


class _StepCounter(keras.callbacks.Callback):
    """Counts the batches that began: training, test and predict."""

    def __init__(self):
        super().__init__()
        self.batches = 0

    def on_train_batch_begin(self, batch, logs=None):
        self.batches += 1

    def on_test_batch_begin(self, batch, logs=None):
        self.batches += 1

    def on_predict_batch_begin(self, batch, logs=None):
        self.batches += 1


def refused_before_any_step(model, method, match, *args, **kwargs):
    """Calls `model.<method>(*args, **kwargs)`, expecting an
    `InvalidInputError` matching `match` before any batch ran and any weight
    or optimizer step changed; returns the message."""
    import numpy as np

    from keras_gradwatch import InvalidInputError

    weights = [np.array(w) for w in model.get_weights()]
    iterations = int(model.optimizer.iterations) if model.optimizer is not None else 0
    counter = _StepCounter()
    with pytest.raises(InvalidInputError, match=match) as error:
        getattr(model, method)(*args, callbacks=[counter], verbose=0, **kwargs)
    assert counter.batches == 0, f"{counter.batches} batch(es) ran before the error"
    if model.optimizer is not None:
        assert int(model.optimizer.iterations) == iterations
    for got, want in zip(model.get_weights(), weights):
        np.testing.assert_array_equal(got, want)
    return str(error.value)


class LearningRateFault(keras.callbacks.Callback):
    """Multiplies a variable learning rate by `factor` before step `at`
    (counted from 1), as a faulty schedule callback would."""

    def __init__(self, at, factor):
        super().__init__()
        self.at, self.factor, self.step = at, factor, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.step += 1
        if self.step == self.at:
            rate = self.model.optimizer.learning_rate
            rate.assign(rate * self.factor)
