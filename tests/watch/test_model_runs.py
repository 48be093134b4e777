"""One GradWatch reused across models: a run per model (issue 19)."""

import json

import keras
import numpy as np

from keras_gradwatch import GradWatch
from keras_gradwatch import cli
from keras_gradwatch import records


def lstm(name, length):
    model = keras.Sequential(
        [keras.Input((length, 3)), keras.layers.LSTM(4), keras.layers.Dense(1)], name=name
    )
    model.compile(optimizer="adam", loss="mse")
    return model


def dense(name):
    model = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(1)],
        name=name,
    )
    model.compile(optimizer="sgd", loss="mse")
    return model


def test_each_model_gets_its_own_run_and_is_measured(tmp_path):
    rng = np.random.default_rng(0)
    flat_x, flat_y = rng.random((32, 6)).astype("float32"), rng.random((32, 1))
    short_x, long_x = rng.random((32, 10, 3)).astype("float32"), rng.random((32, 30, 3))
    y = rng.random((32, 1)).astype("float32")
    callbacks = [GradWatch(tmp_path, plots=None, every=2)]
    first, second, third = dense("linear"), lstm("lstm>short", 10), lstm("lstm_long", 30)
    first.fit(flat_x, flat_y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
    second.fit(short_x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)
    third.fit(long_x.astype("float32"), y, batch_size=16, epochs=2, verbose=0,
              callbacks=callbacks)
    second.fit(short_x, y, batch_size=16, epochs=1, verbose=0, callbacks=callbacks)

    listing = json.loads((tmp_path / records.MODELS).read_text())["models"]
    assert listing == [
        {"index": 1, "model": "linear", "folder": "."},
        {"index": 2, "model": "lstm>short", "folder": "models/2-lstm_short"},
        {"index": 3, "model": "lstm_long", "folder": "models/3-lstm_long"},
    ]
    runs = {e["model"]: records.load_run(e["folder"]) for e in records.model_runs(tmp_path)}
    assert {name: run.settings["model"] for name, run in runs.items()} == {
        "linear": "linear", "lstm>short": "lstm>short", "lstm_long": "lstm_long"}
    # No model's steps are pooled with another's: 2 steps per epoch each, and
    # the short LSTM's second fit continues its own run.
    assert [len(runs[n].steps) for n in ("linear", "lstm>short", "lstm_long")] == [2, 4, 4]
    assert [s["step"] for s in runs["lstm>short"].steps] == [1, 2, 3, 4]
    # Every model is measured, each on its own probe batch.
    for name, run in runs.items():
        summary = records.summarize(run)
        assert summary["measurement_error"] is None, name
        assert summary["measurements"] >= 2, name
    assert set(runs["lstm_long"].measurements[-1]["layers"]) == {third.layers[0].name}
    text = cli.summary_text(runs["linear"])
    assert "This GradWatch watched 3 models" in text and "models/3-lstm_long" in text
    assert callbacks[0].log_dir == tmp_path / "models/2-lstm_short"
