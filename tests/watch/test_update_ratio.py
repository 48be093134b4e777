"""The update-to-weight ratio (`_update_ratio`), alone and in GradWatch."""

import json
import math

import keras
import numpy as np
import pytest

from keras_gradwatch import Alerting
from keras_gradwatch import GradWatch
from keras_gradwatch import records
from keras_gradwatch.core import _update_ratio


def test_update_ratio_is_the_norm_of_the_change_over_the_norm_of_the_weights():
    before = [np.array([3.0, 4.0]), np.array([[0.0]])]
    after = [np.array([3.0, 4.0]), np.array([[0.05]])]
    assert _update_ratio.update_ratio(before, after) == pytest.approx(0.01)
    assert _update_ratio.update_ratio(before, before) == 0.0
    assert _update_ratio.update_ratio([np.zeros(2)], [np.ones(2)]) == math.inf


class _Weights(keras.callbacks.Callback):
    """The weights of each layer before and after every step."""

    def __init__(self):
        super().__init__()
        self.before, self.after = {}, {}

    def _copy(self):
        return {layer.name: [v.numpy().copy() for v in layer.trainable_variables]
                for layer in self.model.layers if layer.trainable_variables}

    def on_train_batch_begin(self, batch, logs=None):
        self.before[batch + 1] = self._copy()

    def on_train_batch_end(self, batch, logs=None):
        self.after[batch + 1] = self._copy()


def _model(learning_rate):
    model = keras.Sequential([keras.Input((None, 2)), keras.layers.SimpleRNN(4, name="rnn"),
                              keras.layers.Dense(1, name="head")])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate), loss="mse")
    return model


def test_gradwatch_records_the_ratio_of_each_step_by_hand(tmp_path):
    x = np.random.default_rng(0).normal(size=(32, 10, 2)).astype("float32")
    y = x.sum(axis=1)[:, :1]
    weights = _Weights()
    model = _model(0.01)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False,
              callbacks=[weights, GradWatch(tmp_path, every=1, plots=None)])
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    # Every step: the first from the weights at the start of fit, the others
    # from the snapshot after each measurement.
    assert [bool(s.get("update_ratios")) for s in steps] == [True] * 4
    for record in steps:
        step = record["step"]
        for name, ratio in record["update_ratios"].items():
            before, after = weights.before[step][name], weights.after[step][name]
            change = math.sqrt(sum(float(((a - b) ** 2).sum()) for a, b in zip(after, before)))
            size = math.sqrt(sum(float((b**2).sum()) for b in before))
            assert ratio == pytest.approx(change / size, rel=1e-6), (step, name)
    summary = records.summarize(records.load_run(tmp_path))
    assert summary["update_ratio_step"] == 4 and set(summary["update_ratios"]) == {"rnn", "head"}


def test_a_first_step_that_rewrites_a_layer_is_exploding_before_the_loss_moves(tmp_path):
    x = np.random.default_rng(0).normal(size=(16, 10, 2)).astype("float32")
    y = 10 * x.sum(axis=1)[:, :1]
    watch = GradWatch(tmp_path, plots=None, alerting=Alerting(exploding=lambda alert: None))
    _model(5.0).fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[watch])
    first = [a for a in watch.alerts if a.signal == "update_ratio"][0]
    assert first.step == 1 and first.kind == "exploding" and first.value > 0.1
    assert "an update as large as the layer" in first.message
    # The loss of step 1 is the untrained model's: it has not moved yet.
    loss_1 = json.loads((tmp_path / "steps.jsonl").read_text().splitlines()[0])["loss"]
    assert math.isfinite(loss_1) and loss_1 < 1e4


def test_one_large_early_step_of_a_small_layer_is_no_alert():
    # A head of a few weights can move by more than a tenth in one healthy
    # step: an alert needs that at 3 measured steps in a row, or an update as
    # large as the layer.
    from keras_gradwatch import alerts
    from keras_gradwatch.core._detectors import Settings
    from keras_gradwatch.watch import _alerting
    from keras_gradwatch.watch import _checks

    seen = []
    desk = _alerting.AlertDesk(alerts.resolve_actions({"exploding": seen.append}),
                               record=lambda a: None, stop=lambda: None, where=lambda: (1, 0))
    checks = _checks.Checks(desk, Settings())
    checks.begin_fit(_model(0.1), step=0)
    for step, ratio in ((1, 0.4), (2, 0.01), (3, 0.3), (4, 0.2)):
        checks.step({"loss": 1.0}, step, 0, step - 1, add_step=lambda r: None,
                    update_ratios={"head": ratio}, step_updates=1)
    assert seen == []
    checks.step({"loss": 1.0}, 5, 0, 4, add_step=lambda r: None,
                update_ratios={"head": 0.5}, step_updates=1)
    assert seen == []  # three in a row, but the loss has not risen
    # (The step loss comes from the running mean: a mean of 1.4 over 6 steps
    # is a loss of 3.4 at step 6.)
    checks.step({"loss": 1.4}, 6, 0, 5, add_step=lambda r: None,
                update_ratios={"head": 0.5}, step_updates=1)
    assert [a.signal for a in seen] == ["update_ratio"] and "4 measured steps in a row" in seen[0].message


def test_truncated_bptt_ratios_are_judged_per_window_update(tmp_path):
    # A stateful GRU on a stream at window 4: each step holds 25 window
    # updates; their combined change is large, each one is not.
    from keras_gradwatch import TruncatedBPTT

    rng = np.random.default_rng(0)
    x = rng.normal(size=(24, 100, 2)).astype("float32")
    y = np.cumsum(x[..., :1], axis=1) / 10
    inner = keras.Sequential([keras.Input(batch_shape=(8, None, 2)),
                              keras.layers.GRU(4, stateful=True, return_sequences=True),
                              keras.layers.Dense(1)])
    model = TruncatedBPTT(inner, window=4)
    model.compile(optimizer=keras.optimizers.Adam(0.02), loss="mse")
    watch = GradWatch(tmp_path, every=1, plots=None,
                      alerting=Alerting(exploding=lambda alert: None))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[watch])
    steps = [json.loads(line) for line in (tmp_path / "steps.jsonl").read_text().splitlines()]
    ratios = [(s["updates"], max(s["update_ratios"].values())) for s in steps
              if s.get("update_ratios")]
    assert ratios and all(updates == 25 for updates, _ in ratios)
    # Combined over the step, the ratios are above 0.1 at every step (what
    # used to be 3 exploding alerts in a row); per update they are healthy.
    assert all(ratio > 0.1 for _, ratio in ratios[:3])
    assert [a for a in watch.alerts if a.signal == "update_ratio"] == []
