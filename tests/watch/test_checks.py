"""GradWatch's checks (`_checks`): evidence to the detectors, without a fit."""

import keras
import numpy as np

from keras_gradwatch import alerts
from keras_gradwatch.core._detectors import Settings
from keras_gradwatch.measurement import LayerProfile
from keras_gradwatch.measurement import Measurement
from keras_gradwatch.watch import _alerting
from keras_gradwatch.watch import _checks


def desk():
    """An alert desk whose actions collect the alerts (nothing printed)."""
    seen = []
    made = _alerting.AlertDesk(
        alerts.resolve_actions({kind: seen.append for kind in alerts.KINDS}),
        record=lambda alert: None,
        stop=lambda: None,
        where=lambda: (5, 0),
        diagnose=lambda: ("rnn", "First layer affected: 'rnn'."),
    )
    return made, seen


def model():
    made = keras.Sequential([keras.Input((None, 1)), keras.layers.SimpleRNN(2), keras.layers.Dense(1)])
    made.compile(optimizer="sgd", loss="mse")
    return made


def test_steps_are_recorded_with_their_own_loss_and_the_updates_of_their_ratios():
    made, seen = desk()
    checks = _checks.Checks(made, Settings())
    checks.begin_fit(model(), step=0)
    rows = []
    for step, loss in enumerate([4.0, 2.0, 3.0], start=1):
        logs = {"loss": loss, "grad_norm": 1.0, "window": 8}
        # No loss tracker has run: the step loss comes from the running
        # mean (equal weights): 2 * 2 - 4 = 0 at step 2, 3 * 3 - 2 * 2 = 5 at 3.
        checks.step(logs, step, 0, step - 1, add_step=rows.append,
                    update_ratios={"rnn": 0.5} if step == 3 else None, step_updates=25)
    assert [r["window"] for r in rows] == [8, 8, 8]
    assert [r["loss"] for r in rows] == [4.0, 0.0, 5.0]
    assert rows[2]["update_ratios"] == {"rnn": 0.5} and rows[2]["updates"] == 25
    assert "updates" not in rows[0]
    assert checks.norm_logged and seen == []  # 0.5 over 25 updates: 0.02 each


def test_a_nonfinite_step_is_reported_with_the_first_layer_affected():
    made, seen = desk()
    checks = _checks.Checks(made, Settings())
    checks.begin_fit(model(), step=0)
    checks.step({"loss": float("nan")}, 1, 0, 0, add_step=lambda r: None)
    assert [(a.kind, a.signal, a.layer) for a in seen] == [("nonfinite", "loss", "rnn")]


def _measurement(profile, site="input", norm=1.0):
    record = LayerProfile.from_profile("lstm", site, profile, None, 1e-2, 0.05)
    return Measurement(layers={"lstm": record}, length=len(profile), sequences=16,
                       loss_steps="last", window=None, global_norm=norm,
                       layer_norms={"lstm": norm})


def test_measurements_find_growth_in_time_but_not_one_standing_lag():
    made, found = desk()
    checks = _checks.Checks(made, Settings())
    standing = 0.91 ** np.arange(51)
    standing[50] = 14 * standing[1:].min()
    growing = 0.5 * 1.2 ** np.arange(30)
    checks.epoch_end(0, {"loss": 0.70})
    checks.epoch_end(1, {"loss": 0.70})
    checks.measurement(_measurement(growing), 9, 1)
    assert found == []  # at the input: no verdict (where the information sits)
    checks.measurement(_measurement(standing, site="state"), 10, 1)
    assert found == []
    checks.measurement(_measurement(growing, site="state"), 11, 1)
    assert [a.kind for a in found] == ["exploding"] and "grows going back" in found[0].message


def test_an_overflow_is_exploding_reported_before_its_nonfinite_value():
    made, found = desk()
    checks = _checks.Checks(made, Settings())
    asked = []
    broken = _measurement(np.ones(10), norm=float("inf"))
    checks.measurement(broken, 12, 1, inputs_finite=lambda: asked.append(1) or True)
    assert [(a.kind, a.signal) for a in found] == [("exploding", "layer_norm"),
                                                  ("nonfinite", "layer_norm")]
    assert asked == [1]
    checks.measurement(_measurement(np.ones(10)), 13, 1, inputs_finite=lambda: 1 / 0)


def test_epoch_ends_feed_the_loss_trend_that_vanishing_and_truncation_read():
    made, found = desk()
    checks = _checks.Checks(made, Settings(vanishing_patience=1))
    fading = np.concatenate([0.3 ** np.arange(40), np.zeros(260)])
    layers = {
        "short": LayerProfile.from_profile("short", "state", fading, 10, 1e-2, 0.05),
        "long": LayerProfile.from_profile("long", "state", 0.99 ** np.arange(300), 10, 1e-2,
                                          0.05),
    }
    result = Measurement(layers=layers, length=300, sequences=16, loss_steps="last", window=10)
    checks.epoch_end(0, {"loss": 0.9, "val_loss": 0.80})
    checks.epoch_end(1, {"loss": 0.5, "val_loss": 0.78})  # falling: nothing
    checks.measurement(result, 200, 2, updates=300, backprop=10)
    assert found == []
    checks.epoch_end(2, {"loss": 0.4, "val_loss": 0.785})  # validation stalls
    checks.measurement(result, 300, 3, updates=400, backprop=10)
    assert [(a.kind, a.layer) for a in found] == [("vanishing", "short"), ("truncation", "long")]
    assert all("validation loss has not fallen" in a.message for a in found)
