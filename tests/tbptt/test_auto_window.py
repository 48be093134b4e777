"""Tests of `TruncatedBPTT(window="auto")` and its rule (`_auto_window`)."""

import json

import keras
import numpy as np
import pytest

from keras_gradwatch import GradWatch
from keras_gradwatch import TruncatedBPTT
from keras_gradwatch import records
from keras_gradwatch.errors import InvalidInputError
from keras_gradwatch.tbptt import _auto_window

CHOICES = [2, 4, 8, 16, 32, 64]


def test_sizes_are_bounds_and_powers_of_two_between():
    assert _auto_window.sizes(2, 100) == [2, 4, 8, 16, 32, 64, 100]
    assert _auto_window.sizes(5, 40) == [5, 8, 16, 32, 40]
    assert _auto_window.sizes(8, 8) == [8]
    assert _auto_window.sizes(1, 2) == [1, 2]


def test_wanted_window_is_smallest_size_within_tolerance():
    rho = 0.5
    profile = rho ** np.arange(200)
    # bias(k) = rho^k: 0.125 at 3, 0.0625 at 4.
    assert _auto_window.wanted_window([profile], CHOICES, 0.1) == 4
    assert _auto_window.wanted_window([profile], CHOICES, 0.2) == 4
    assert _auto_window.wanted_window([profile], CHOICES, 0.3) == 2
    slow = 0.97 ** np.arange(200)  # bias(64) = 0.97^64 = 0.14
    assert _auto_window.wanted_window([slow], CHOICES, 0.1) == 64
    # Every layer must be within tolerance: the slowest one decides.
    assert _auto_window.wanted_window([profile, slow], CHOICES, 0.1) == 64
    assert _auto_window.wanted_window([], CHOICES, 0.1) == 2


def test_next_window_grows_at_once_and_shrinks_one_size():
    assert _auto_window.next_window(4, 32, CHOICES) == 32
    assert _auto_window.next_window(64, 4, CHOICES) == 32
    assert _auto_window.next_window(8, 4, CHOICES) == 4
    assert _auto_window.next_window(16, 16, CHOICES) == 16
    assert _auto_window.next_window(64, 4, CHOICES, may_shrink=False) == 64
    # Growth does not wait for the warm-up.
    assert _auto_window.next_window(4, 16, CHOICES, may_shrink=False) == 16


def test_next_window_treats_sizes_past_the_length_alike():
    # Length 40: 64 and 100 both cover a whole sequence.
    choices = [2, 4, 8, 16, 32, 64, 100]
    assert _auto_window.next_window(100, 64, choices, length=40) == 100
    assert _auto_window.next_window(100, 4, choices, length=40) == 32
    assert _auto_window.next_window(32, 64, choices, length=40) == 64


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"tolerance": 0.0}, "tolerance=0.0"),
        ({"tolerance": 1.5}, "tolerance=1.5"),
        ({"min_window": 0}, "min_window=0"),
        ({"max_window": 2.5}, "max_window=2.5"),
        ({"min_window": 50, "max_window": 10}, "min_window <= max_window"),
        ({"backprop": 10}, "backprop=10 with window='auto'"),
    ],
)
def test_bad_auto_settings_are_clear_errors(kwargs, words):
    with pytest.raises(InvalidInputError, match=words.replace("(", r"\(")):
        TruncatedBPTT(_linear_model(0.5), window="auto", **kwargs)


def test_auto_settings_need_window_auto():
    with pytest.raises(InvalidInputError, match="tolerance=0.2 with window=8"):
        TruncatedBPTT(_linear_model(0.5), window=8, tolerance=0.2)


def _linear_model(rho, units=4, batch=4):
    """A linear stateful RNN whose input gradient decays exactly as rho**lag."""
    return keras.Sequential(
        [
            keras.Input(batch_shape=(batch, None, 1)),
            keras.layers.SimpleRNN(
                units,
                activation="linear",
                stateful=True,
                return_sequences=True,
                kernel_initializer="ones",
                recurrent_initializer=keras.initializers.Identity(gain=rho),
                use_bias=False,
            ),
            keras.layers.Dense(1, kernel_initializer="ones", use_bias=False),
        ]
    )


def _fit_auto(rho, epochs=5, callbacks=None):
    keras.utils.set_random_seed(0)
    model = TruncatedBPTT(_linear_model(rho), window="auto", max_window=64)
    # No learning: the decay stays rho**lag, so the rule is tested exactly.
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(4, 64, 1)).astype("float32")
    history = model.fit(x, x, epochs=epochs, verbose=0, callbacks=callbacks)
    return model, history


def test_auto_window_is_larger_when_the_gradient_decays_slowly(tmp_path):
    fast, fast_history = _fit_auto(0.5)
    slow, slow_history = _fit_auto(0.97)
    # One step per epoch: a decision at each epoch end; shrinking starts
    # after the first epoch, goes one size at a time, and only to a window
    # whose bias is within a tenth of the tolerance: 0.5**8 = 0.004.
    assert fast_history.history["window"] == [64, 32, 16, 8, 8]
    assert fast.window == 8
    assert slow_history.history["window"] == [64] * 5
    assert slow.window == 64
    decisions = fast.window_decisions
    assert [d["wanted"] for d in decisions] == [8] * 5
    assert decisions[-1]["bias"] == pytest.approx(0.5**8, rel=1e-3)


def test_auto_window_says_when_it_sits_at_max_window_above_tolerance(tmp_path):
    # rho 0.97 on 128-step sequences: max_window=64 still cuts off
    # (0.97**64 - 0.97**128) / (1 - 0.97**128) = 12.5 % of the gradient.
    keras.utils.set_random_seed(0)
    model = TruncatedBPTT(_linear_model(0.97), window="auto", max_window=64)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    x = np.random.default_rng(0).normal(size=(4, 128, 1)).astype("float32")
    with pytest.warns(UserWarning) as caught:
        model.fit(x, x, epochs=3, verbose=0, callbacks=[GradWatch(tmp_path, plots=None)])
    capped = [w for w in caught if "sits at max_window" in str(w.message)]
    assert len(capped) == 1  # once, while it stays there
    expected = (0.97**64 - 0.97**128) / (1 - 0.97**128)
    assert f"cuts off {expected:.0%} of the measured gradient, more than tolerance=0.1" in str(
        capped[0].message)
    assert capped[0].filename == __file__
    last = model.window_decisions[-1]
    assert last["window"] == 64 and last["capped"]
    assert last["capped_bias"] == pytest.approx(expected, rel=1e-3)
    summary = records.summarize(records.load_run(tmp_path))
    assert summary["auto_window"]["capped"] is True
    # Sequences no longer than max_window: nothing is cut off, nothing said.
    slow, _ = _fit_auto(0.97)
    assert slow.window == 64 and not any(d["capped"] for d in slow.window_decisions)


def test_auto_window_grows_at_once_when_the_bias_is_too_large():
    keras.utils.set_random_seed(0)
    model = TruncatedBPTT(_linear_model(0.97), window="auto", max_window=64)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.0), loss="mse")
    model.window = 4  # as if it had shrunk while the memory was short
    x = np.random.default_rng(0).normal(size=(4, 64, 1)).astype("float32")
    history = model.fit(x, x, epochs=2, verbose=0)
    # Growth does not wait for the warm-up: 64 from the first decision.
    assert history.history["window"] == [4, 64]
    assert model.window_decisions[0]["bias"] > 0.1


def test_auto_window_is_in_gradwatch_records_and_plots(tmp_path):
    run = tmp_path / "run"
    watch = GradWatch(str(run))
    _fit_auto(0.5, epochs=3, callbacks=[watch])
    steps = [json.loads(line) for line in (run / "steps.jsonl").read_text().splitlines()]
    assert [s["window"] for s in steps] == [64, 32, 16]  # see the test above
    settings = json.loads((run / "run.json").read_text())
    assert settings["tbptt"]["auto_window"] == {
        "tolerance": 0.1, "min_window": 2, "max_window": 64,
    }
    summary = records.summarize(records.load_run(run))
    assert summary["window"] == 16
    assert "latest 16" in records.describe_tbptt(settings["tbptt"], summary["window"])
    watch.draw()
    assert (run / "gradient_norms.png").stat().st_size > 0


def test_window_set_between_fits_trains_as_that_window():
    keras.utils.set_random_seed(1)
    x = np.random.default_rng(1).normal(size=(8, 24, 1)).astype("float32")
    inner = _linear_model(0.5)
    changed = TruncatedBPTT(inner, window=12)
    changed.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    changed.fit(x, x, epochs=1, verbose=0, shuffle=False)
    weights = changed.get_weights()
    changed.window = 3
    assert changed.backprop == 3
    after = changed.fit(x, x, epochs=2, verbose=0, shuffle=False).history["loss"]

    twin = TruncatedBPTT(keras.models.clone_model(inner), window=3)
    twin.compile(optimizer=keras.optimizers.SGD(0.01), loss="mse")
    twin.set_weights(weights)
    expected = twin.fit(x, x, epochs=2, verbose=0, shuffle=False).history["loss"]
    np.testing.assert_allclose(after, expected, rtol=1e-5)
    with pytest.raises(InvalidInputError, match="window=0"):
        changed.window = 0


def test_auto_window_config_round_trip():
    model = TruncatedBPTT(_linear_model(0.5), window="auto", tolerance=0.2, max_window=32)
    config = model.get_config()
    assert config["window"] == "auto"
    assert (config["tolerance"], config["min_window"], config["max_window"]) == (0.2, 2, 32)
    restored = TruncatedBPTT.from_config(config)
    assert restored.auto_window and restored.window == 32 and restored.tolerance == 0.2
